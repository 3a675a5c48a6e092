package io.kvmarket.transfer.tcp;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.device.Device;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;
import io.kvmarket.testkit.DeviceBytes;
import io.kvmarket.testkit.PublishedChunks;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Optional;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The staging ring under load and close: two nodes importing from each other at once never deadlock on their rings,
 * and a ring is never freed while a thread still copies through it.
 */
@Timeout(120)
class StagingRingFaultsTest {

    static final int CHUNK = 64 * 1024;
    static final int CHUNKS = 16;

    @TempDir
    Path dirA;
    @TempDir
    Path dirB;

    /** One node: an opaque device serving a pool of CHUNKS chunks and fetching through the same transport. */
    static final class Node implements AutoCloseable {
        final OpaqueDevice device;
        final DeviceBuffer source;
        final DeviceBuffer destination;
        final PublishedChunks pool;
        final TcpTransport transport;
        final Endpoint endpoint;
        final int chunk;
        final byte[] bytes;

        Node(Device device0, OpaqueDevice device, long id, int seed, TcpConfig config) {
            this(device, id, seed, config, CHUNK);
        }

        Node(OpaqueDevice device, long id, int seed, TcpConfig config, int chunk) {
            this.device = device;
            this.chunk = chunk;
            this.bytes = new byte[chunk * CHUNKS];
            source = device.allocate(bytes.length);
            destination = device.allocate(bytes.length);
            new Random(seed).nextBytes(bytes);
            DeviceBytes.HOST.write(source, 0, bytes);
            pool = new PublishedChunks(device, source);
            transport = TcpTransport.open(device, id, config);
            endpoint = transport.advertise(pool).orElseThrow();
            for (int i = 0; i < CHUNKS; i++) {
                Offer o = offer(i);
                pool.publish(o.key(), o.generation(), o.offset(), o.length());
            }
        }

        Offer offer(int slot) {
            return Offer.of(new ChunkKey(7, slot), 1, ProcessIdentity.current(), endpoint, (long) slot * chunk,
                    chunk, 1, 900 + slot, Long.MAX_VALUE);
        }

        List<Offer> all() {
            List<Offer> l = new ArrayList<>();
            for (int i = 0; i < CHUNKS; i++) {
                l.add(offer(i));
            }
            return l;
        }

        @Override
        public void close() {
            transport.close();
            device.close();
        }
    }

    static CopyBatch inOrder(List<Offer> chunks) {
        CopyBatch.Builder b = CopyBatch.builder();
        for (int i = 0; i < chunks.size(); i++) {
            b.add(chunks.get(i).offset(), i * chunks.get(i).length(), chunks.get(i).length());
        }
        return b.build();
    }

    /**
     * Two nodes import from each other at once. Each node's ring is shared by its server and its fetchers; a fetcher
     * takes a slot and then blocks on the socket for the peer's bytes, while the peer's server needs a slot of its own
     * ring, held by the peer's fetcher waiting the same way: a distributed deadlock that only the I/O timeout breaks.
     * Expected: every fetch completes with exact bytes.
     */
    @Test
    void mutualImportsDoNotDeadlockOnSharedRings() throws Exception {
        TcpConfig cfg = TcpTransportContractTest.serving().withStaging(1, 4096).withTimeouts(1000, 2000, 60_000);
        try (Node a = new Node(null, new OpaqueDevice(new HostDevice(dirA)), 1, 1, cfg);
             Node b = new Node(null, new OpaqueDevice(new HostDevice(dirB)), 2, 2, cfg)) {
            int failures = 0;
            String first = null;
            for (int round = 0; round < 30; round++) {
                CompletableFuture<Void> ab = a.transport.fetch(b.all(), a.destination, inOrder(b.all()));
                CompletableFuture<Void> ba = b.transport.fetch(a.all(), b.destination, inOrder(a.all()));
                for (CompletableFuture<Void> f : List.of(ab, ba)) {
                    try {
                        f.join();
                    } catch (RuntimeException e) {
                        failures++;
                        if (first == null) {
                            first = "round " + round + ": " + e.getCause();
                        }
                    }
                }
            }
            assertEquals(0, failures, "mutual imports failed; first: " + first);
            assertArrayEquals(b.bytes, DeviceBytes.HOST.read(a.destination, 0, b.bytes.length));
            assertArrayEquals(a.bytes, DeviceBytes.HOST.read(b.destination, 0, a.bytes.length));
        }
    }

    /** An opaque device whose copies INTO staging memory block until released: a slow GPU copy. */
    static final class SlowStagingDevice implements Device {
        final OpaqueDevice inner;
        final CountDownLatch copying = new CountDownLatch(1);
        final CountDownLatch release = new CountDownLatch(1);
        final AtomicInteger copiesInFlight = new AtomicInteger();
        volatile boolean slow = true;

        SlowStagingDevice(OpaqueDevice inner) {
            this.inner = inner;
        }

        @Override public String name() { return "slow " + inner.name(); }
        @Override public DeviceBuffer allocate(long bytes) { return inner.allocate(bytes); }
        @Override public DeviceBuffer allocateStaging(long bytes) { return inner.allocateStaging(bytes); }
        @Override public Optional<ByteBuffer> hostView(DeviceBuffer b) { return inner.hostView(b); }
        @Override public void free(DeviceBuffer b) { inner.free(b); }
        @Override public byte[] exportHandle(DeviceBuffer b) { return inner.exportHandle(b); }
        @Override public DeviceBuffer openHandle(byte[] h) { return inner.openHandle(h); }
        @Override public void closeHandle(DeviceBuffer m) { inner.closeHandle(m); }
        @Override public void close() { inner.close(); }

        @Override
        public CompletableFuture<Void> copy(DeviceBuffer src, DeviceBuffer dst, CopyBatch batch) {
            if (slow && inner.hostView(dst).isPresent()) { // into a staging slot: the server's side
                return CompletableFuture.runAsync(() -> {
                    copiesInFlight.incrementAndGet();
                    copying.countDown();
                    try {
                        release.await();
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                    inner.copy(src, dst, batch).join();
                    copiesInFlight.decrementAndGet();
                });
            }
            return inner.copy(src, dst, batch);
        }
    }

    /**
     * The promise: the ring is never freed while a thread still copies through it. TcpTransport.close() checks its
     * fetchers stopped before freeing the ring, but not the server's workers: a server thread mid device-copy into a
     * slot (join() is not interruptible) outlives TcpServer.close()'s 5 s wait and the ring is freed under it.
     */
    @Test
    void ringIsNotFreedWhileAServerThreadStillCopiesIntoIt() throws Exception {
        OpaqueDevice opaqueA = new OpaqueDevice(new HostDevice(dirA));
        SlowStagingDevice slowA = new SlowStagingDevice(opaqueA);
        TcpConfig cfg = TcpTransportContractTest.serving().withStaging(2, 4096);
        DeviceBuffer src = slowA.allocate((long) CHUNK * CHUNKS);
        PublishedChunks pool = new PublishedChunks(slowA, src);
        TcpTransport server = TcpTransport.open(slowA, 1, cfg);
        Endpoint ep = server.advertise(pool).orElseThrow();
        Offer o = Offer.of(new ChunkKey(9, 0), 1, ProcessIdentity.current(), ep, 0, CHUNK, 1, 5, Long.MAX_VALUE);
        pool.publish(o.key(), o.generation(), o.offset(), o.length());
        OpaqueDevice importer = new OpaqueDevice(new HostDevice(dirB));
        TcpTransport client = TcpTransport.open(importer, 2, TcpTransportContractTest.fetchingOnly()
                .withStaging(2, 4096).withTimeouts(1000, 30_000, 60_000));
        DeviceBuffer dst = importer.allocate(CHUNK);
        try {
            CompletableFuture<Void> f = client.fetch(List.of(o), dst, inOrder(List.of(o)));
            assertTrue(slowA.copying.await(10, TimeUnit.SECONDS), "server never started its staging copy");
            server.close(); // takes ~5 s: the server thread is stuck in the device copy
            int inFlight = slowA.copiesInFlight.get();
            int stagingLeft = opaqueA.stagingBuffers();
            slowA.release.countDown();
            assertEquals(1, inFlight, "test premise: a copy into a staging slot is still running");
            assertEquals(2, stagingLeft,
                    "the staging ring was freed by close() while a server thread still copies into a slot");
        } finally {
            slowA.release.countDown();
            client.close();
            importer.close();
            slowA.close();
        }
    }

    /** The same fetches one direction at a time on the same one-slot rings all succeed. */
    @Test
    void controlOneDirectionAtATimeSucceeds() throws Exception {
        TcpConfig cfg = TcpTransportContractTest.serving().withStaging(1, 4096).withTimeouts(1000, 2000, 60_000);
        try (Node a = new Node(null, new OpaqueDevice(new HostDevice(dirA)), 1, 1, cfg);
             Node b = new Node(null, new OpaqueDevice(new HostDevice(dirB)), 2, 2, cfg)) {
            for (int round = 0; round < 30; round++) {
                a.transport.fetch(b.all(), a.destination, inOrder(b.all())).join();
                b.transport.fetch(a.all(), b.destination, inOrder(a.all())).join();
            }
            assertArrayEquals(b.bytes, DeviceBytes.HOST.read(a.destination, 0, b.bytes.length));
        }
    }

    /** Same attack with the DEFAULT ring (8 x 4 MiB) and 2 MiB chunks, 8 concurrent fetches each way. */
    @Test
    void mutualImportsWithDefaultRingDoNotDeadlock() throws Exception {
        TcpConfig cfg = TcpTransportContractTest.serving();
        int chunk = 2 << 20;
        try (Node a = new Node(new OpaqueDevice(new HostDevice(dirA)), 1, 1, cfg, chunk);
             Node b = new Node(new OpaqueDevice(new HostDevice(dirB)), 2, 2, cfg, chunk)) {
            int failures = 0;
            String first = null;
            for (int round = 0; round < 5; round++) {
                List<CompletableFuture<Void>> fs = new ArrayList<>();
                for (int k = 0; k < 8; k++) {
                    DeviceBuffer da = a.device.allocate((long) chunk * CHUNKS);
                    DeviceBuffer db = b.device.allocate((long) chunk * CHUNKS);
                    fs.add(a.transport.fetch(b.all(), da, inOrder(b.all())).whenComplete((x, e) -> a.device.free(da)));
                    fs.add(b.transport.fetch(a.all(), db, inOrder(a.all())).whenComplete((x, e) -> b.device.free(db)));
                }
                for (CompletableFuture<Void> f : fs) {
                    try {
                        f.join();
                    } catch (RuntimeException e) {
                        failures++;
                        if (first == null) {
                            first = "round " + round + ": " + e.getCause();
                        }
                    }
                }
            }
            assertEquals(0, failures, "mutual imports failed; first: " + first);
        }
    }
}
