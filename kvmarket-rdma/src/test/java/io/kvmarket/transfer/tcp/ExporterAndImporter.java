package io.kvmarket.transfer.tcp;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;
import io.kvmarket.testkit.DeviceBytes;
import io.kvmarket.testkit.PublishedChunks;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.io.TempDir;

import java.net.InetAddress;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * What the TCP transport tests stand on: an exporter's host device whose pool holds {@value #CHUNKS} random chunks
 * of {@value #CHUNK} bytes (published as a test says), an importer's host device with a destination as large, and
 * the transports a test opens, closed after it.
 */
abstract class ExporterAndImporter {

    static final int CHUNK = 64 * 1024;
    static final int CHUNKS = 16;
    static final InetAddress LO = InetAddress.getLoopbackAddress();

    @TempDir
    Path exporterDir;
    @TempDir
    Path importerDir;
    HostDevice exporterDevice;
    HostDevice importerDevice;
    DeviceBuffer source;
    DeviceBuffer destination;
    PublishedChunks pool;
    final byte[] sourceBytes = new byte[CHUNK * CHUNKS];
    /** Closed after each test, in order, before the devices. */
    final List<AutoCloseable> closeMe = new ArrayList<>();

    @BeforeEach
    void openDevices() {
        exporterDevice = new HostDevice(exporterDir);
        importerDevice = new HostDevice(importerDir);
        source = exporterDevice.allocate(sourceBytes.length);
        destination = importerDevice.allocate(sourceBytes.length);
        new Random(5).nextBytes(sourceBytes);
        DeviceBytes.HOST.write(source, 0, sourceBytes);
        pool = new PublishedChunks(exporterDevice, source);
    }

    @AfterEach
    void closeAll() {
        for (AutoCloseable c : closeMe) {
            try {
                c.close();
            } catch (Exception ignored) {
                // closing what a test may have closed itself
            }
        }
        importerDevice.close();
        exporterDevice.close();
    }

    /** A transport closed after the test. */
    TcpTransport open(HostDevice d, long node, TcpConfig c) {
        TcpTransport t = TcpTransport.open(d, node, c);
        closeMe.add(t);
        return t;
    }

    /** Chunk {@code slot} of the pool, offered through {@code e} and published by the pool. */
    Offer publish(Endpoint e, int slot) {
        Offer o = offerAt(e, slot);
        pool.publish(o.key(), o.generation(), o.offset(), o.length());
        return o;
    }

    static Offer offerAt(Endpoint e, int slot) {
        return Offer.of(new ChunkKey(3, slot), 1, ProcessIdentity.current(), e, (long) slot * CHUNK, CHUNK, 1,
                500 + slot, Long.MAX_VALUE);
    }

    /** Chunk i of {@code chunks} to destination slot i, whole. */
    static CopyBatch inOrder(List<Offer> chunks) {
        CopyBatch.Builder b = CopyBatch.builder();
        for (int i = 0; i < chunks.size(); i++) {
            b.add(chunks.get(i).offset(), (long) i * CHUNK, CHUNK);
        }
        return b.build();
    }

    /** "ok", the failure's cause, or that it is still running after {@code seconds}. */
    static String outcome(CompletableFuture<Void> f, long seconds) {
        try {
            f.get(seconds, TimeUnit.SECONDS);
            return "ok";
        } catch (TimeoutException e) {
            return "still running after " + seconds + " s";
        } catch (Exception e) {
            return String.valueOf(e.getCause());
        }
    }

    byte[] sourceChunk(Offer o) {
        return Arrays.copyOfRange(sourceBytes, (int) o.offset(), (int) (o.offset() + CHUNK));
    }

    byte[] destinationSlot(int i) {
        return DeviceBytes.HOST.read(destination, (long) i * CHUNK, CHUNK);
    }
}
