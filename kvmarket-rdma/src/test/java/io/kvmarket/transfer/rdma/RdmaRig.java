package io.kvmarket.transfer.rdma;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;
import io.kvmarket.testkit.DeviceBytes;
import io.kvmarket.testkit.PublishedChunks;
import io.kvmarket.transfer.TransferException;
import io.kvmarket.transfer.tcp.ClusterSecret;
import io.kvmarket.transfer.tcp.TcpConfig;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;

import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;

/**
 * Shared rig of the RDMA abuse, race and queue-shape tests: two host devices, an exporter serving a pool of random bytes, an importer.
 * Everything the tests attack goes through public methods; this class only sets up.
 */
abstract class RdmaRig {

    static final ClusterSecret SECRET = ClusterSecret.of("rdma-rig-cluster-secret-0123456789".getBytes(StandardCharsets.UTF_8));
    static final int CHUNK = 64 * 1024;

    @TempDir
    Path exporterDir;
    @TempDir
    Path importerDir;
    HostDevice exporterDevice;
    HostDevice importerDevice;
    final List<AutoCloseable> toClose = new ArrayList<>();
    long[] liveBefore;

    @BeforeAll
    static void verbs() {
        FakeVerbs.require();
    }

    @BeforeEach
    void devices() {
        liveBefore = Verbs.liveObjects();
        exporterDevice = new HostDevice(exporterDir);
        importerDevice = new HostDevice(importerDir);
    }

    @AfterEach
    void closeAll() {
        for (int i = toClose.size() - 1; i >= 0; i--) {
            try {
                toClose.get(i).close();
            } catch (Exception e) {
                System.err.println("teardown: " + e);
            }
        }
        importerDevice.close();
        exporterDevice.close();
    }

    static TcpConfig control(boolean serve) {
        return TcpConfig.of(SECRET).withBind(serve ? new InetSocketAddress(InetAddress.getLoopbackAddress(), 0) : null);
    }

    static RdmaConfig serving() {
        return RdmaConfig.of(control(true));
    }

    static RdmaConfig importing() {
        return RdmaConfig.of(control(false));
    }

    /** RdmaConfig with every field spelled out. */
    static RdmaConfig config(TcpConfig control, int queuePairs, int sendQueueDepth, int channelsPerPeer,
                             int fetchThreads, long deadlineMillis) {
        return new RdmaConfig(control, null, 0, -1, queuePairs, sendQueueDepth, 16, channelsPerPeer, fetchThreads,
                deadlineMillis, 14, 7, 10.0, 20);
    }

    RdmaTransport open(HostDevice device, long node, RdmaConfig config) {
        try {
            RdmaTransport t = RdmaTransport.open(device, node, config);
            toClose.add(t);
            return t;
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** A pool of {@code chunks} random chunks on the exporter device, every chunk published at generation 100 + c. */
    static final class Pool {
        final PublishedChunks pool;
        final DeviceBuffer buffer;
        final byte[] bytes;
        final int chunks;

        Pool(HostDevice device, int chunks, long seed) {
            this.chunks = chunks;
            this.bytes = new byte[chunks * CHUNK];
            new Random(seed).nextBytes(bytes);
            this.buffer = device.allocate(bytes.length);
            DeviceBytes.HOST.write(buffer, 0, bytes);
            this.pool = new PublishedChunks(device, buffer);
        }

        List<Offer> offers(Endpoint endpoint, int keySpace) {
            List<Offer> offers = new ArrayList<>();
            for (int c = 0; c < chunks; c++) {
                Offer o = Offer.of(new ChunkKey(keySpace, c), 1, ProcessIdentity.current(), endpoint, (long) c * CHUNK,
                        CHUNK, 1, 100 + c, Long.MAX_VALUE);
                pool.publish(o.key(), o.generation(), o.offset(), o.length());
                offers.add(o);
            }
            return offers;
        }
    }

    /** Every chunk to the same place, in {@code pieces} segments each, back to front so that none merge. */
    static CopyBatch inPieces(int chunks, int pieces) {
        CopyBatch.Builder b = CopyBatch.builder();
        for (int c = 0; c < chunks; c++) {
            for (int s = pieces - 1; s >= 0; s--) {
                b.add((long) c * CHUNK + (long) s * (CHUNK / pieces), (long) c * CHUNK + (long) s * (CHUNK / pieces),
                        CHUNK / pieces);
            }
        }
        return b.build();
    }

    static TransferException failure(CompletableFuture<Void> f) {
        CompletionException e = assertThrows(CompletionException.class, f::join);
        return assertInstanceOf(TransferException.class, e.getCause());
    }

    static List<String> transportThreads() {
        return Thread.getAllStackTraces().keySet().stream().map(Thread::getName)
                .filter(n -> n.startsWith("kvmarket-rdma") || n.startsWith("kvmarket-control")).toList();
    }

    /** Waits up to 5 s for no kvmarket-rdma-* / kvmarket-control-* thread; the names left. */
    static List<String> threadsLeft() throws InterruptedException {
        long deadline = System.nanoTime() + 5_000_000_000L;
        List<String> left = transportThreads();
        while (!left.isEmpty() && System.nanoTime() < deadline) {
            Thread.sleep(50);
            left = transportThreads();
        }
        return left;
    }
}
