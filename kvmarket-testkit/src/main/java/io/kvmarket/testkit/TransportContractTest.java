package io.kvmarket.testkit;

import io.kvmarket.MissReason;
import io.kvmarket.device.CopyBatch;
import io.kvmarket.device.Device;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Offer;
import io.kvmarket.transfer.TransferException;
import io.kvmarket.transfer.Transport;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Behaviour every {@link Transport} must have, importer side: it moves exactly the bytes of every segment from
 * where an offer points into the importer's buffer, and every runtime failure completes the fetch exceptionally
 * with a {@link TransferException} whose reason says what went wrong, never with wrong bytes. Each
 * implementation's test extends this and supplies an exporter (the memory an offer points at) and an importer.
 */
@Timeout(60)
public abstract class TransportContractTest {

    protected static final int SOURCE_BYTES = 1 << 20;

    private Device exporter;
    private Device importer;
    private Transport transport;
    private DeviceBuffer source;
    private DeviceBuffer destination;
    private byte[] sourceBytes;

    /** The device the exporter's memory lives on. */
    protected abstract Device exporterDevice();

    /** The device the importer copies into (may be the exporter's). */
    protected abstract Device importerDevice();

    /** Host access to both devices' memory. */
    protected abstract DeviceBytes bytes();

    /** The transport under test, importing into {@link #importerDevice()}. */
    protected abstract Transport transport(Device importer);

    /** An offer of {@code length} bytes at {@code offset} of {@code source}, as the exporter would publish it. */
    protected abstract Offer offer(Device exporter, DeviceBuffer source, long offset, long length);

    @BeforeEach
    void setUp() {
        exporter = exporterDevice();
        importer = importerDevice();
        transport = transport(importer);
        source = exporter.allocate(SOURCE_BYTES);
        destination = importer.allocate(SOURCE_BYTES);
        sourceBytes = new byte[SOURCE_BYTES];
        new Random(42).nextBytes(sourceBytes);
        bytes().write(source, 0, sourceBytes);
        bytes().flush();
    }

    /** Closes what the subclass opened for one test; runs after the contract freed its buffers. */
    protected void closeDevices() {
    }

    @AfterEach
    void tearDown() {
        transport.close();
        importer.free(destination);
        if (source != null) {
            exporter.free(source);
        }
        closeDevices();
    }

    protected static Offer offerWithHandle(byte[] handle, long nodeId, long offset, long length) {
        return new Offer(new ChunkKey(17, 71), nodeId, ProcessIdentity.current(), handle, offset, length, 1, 1,
                Long.MAX_VALUE);
    }

    @Test
    void scatteredSegmentsArriveExactly() {
        Offer o = offer(exporter, source, 4096, SOURCE_BYTES - 4096);
        assertTrue(transport.reaches(o));
        Random rnd = new Random(7);
        CopyBatch.Builder batch = CopyBatch.builder();
        List<long[]> segments = new ArrayList<>();
        for (int i = 0; i < 64; i++) {
            long length = 1 + rnd.nextInt(4096);
            long from = o.offset() + rnd.nextInt((int) (o.length() - length));
            long to = (long) i * 8192;
            batch.add(from, to, length);
            segments.add(new long[] {from, to, length});
        }
        transport.fetch(o, destination, batch.build()).join();
        for (long[] s : segments) {
            byte[] expected = java.util.Arrays.copyOfRange(sourceBytes, (int) s[0], (int) (s[0] + s[2]));
            assertArrayEquals(expected, bytes().read(destination, s[1], (int) s[2]), "segment at " + s[0]);
        }
    }

    @Test
    void concurrentFetchesFromOneSourceAreAllExact() {
        Offer o = offer(exporter, source, 0, SOURCE_BYTES);
        List<CompletableFuture<Void>> fetches = new ArrayList<>();
        for (int i = 0; i < 16; i++) {
            long from = (long) i * 65536;
            fetches.add(transport.fetch(o, destination, CopyBatch.builder().add(from, from, 65536).build()));
        }
        fetches.forEach(CompletableFuture::join);
        assertArrayEquals(sourceBytes, bytes().read(destination, 0, SOURCE_BYTES));
    }

    @Test
    void aSpanOutsideTheSourceBufferIsAMalformedOfferMiss() {
        Offer o = offer(exporter, source, SOURCE_BYTES - 4096, 8192);
        CopyBatch batch = CopyBatch.builder().add(SOURCE_BYTES - 4096, 0, 8192).build();
        assertEquals(MissReason.MALFORMED_OFFER, failure(transport.fetch(o, destination, batch)).reason());
    }

    @Test
    void aMalformedEndpointIsAMalformedOfferMiss() {
        Offer good = offer(exporter, source, 0, 4096);
        byte[] junk = good.handle();
        junk[junk.length - 1] ^= 0x5a;
        Offer o = offerWithHandle(junk, good.nodeId(), 0, 4096);
        CopyBatch batch = CopyBatch.builder().add(0, 0, 4096).build();
        assertEquals(MissReason.MALFORMED_OFFER, failure(transport.fetch(o, destination, batch)).reason());
    }

    @Test
    void freedSourceMemoryIsAPeerGoneMissAndDeliversNothing() {
        Offer o = offer(exporter, source, 0, 4096);
        exporter.free(source);
        source = null;
        bytes().write(destination, 0, new byte[4096]);
        CopyBatch batch = CopyBatch.builder().add(0, 0, 4096).build();
        assertEquals(MissReason.PEER_GONE, failure(transport.fetch(o, destination, batch)).reason());
        assertArrayEquals(new byte[4096], bytes().read(destination, 0, 4096));
    }

    @Test
    void aClosedTransportRefusesToFetch() {
        Offer o = offer(exporter, source, 0, 4096);
        transport.close();
        CopyBatch batch = CopyBatch.builder().add(0, 0, 4096).build();
        assertThrows(IllegalStateException.class, () -> transport.fetch(o, destination, batch).join());
    }

    private static TransferException failure(CompletableFuture<Void> fetch) {
        CompletionException e = assertThrows(CompletionException.class, fetch::join);
        return assertInstanceOf(TransferException.class, e.getCause());
    }
}
