package io.kvmarket.transfer.rdma;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;
import io.kvmarket.testkit.ChildJvm;
import io.kvmarket.testkit.DeviceBytes;
import io.kvmarket.testkit.PublishedChunks;
import io.kvmarket.transfer.ServedPool;
import io.kvmarket.transfer.TransferException;
import io.kvmarket.transfer.TransferFailure;
import io.kvmarket.transfer.tcp.TcpConfig;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Attacks on lifecycles: pools that lie, pools closed mid-fetch, transports closed while fetches run or from several
 * threads, several transports in one JVM, evictStale racing fetches, and a fetch racing close (in a child JVM, as it
 * may crash the process).
 */
@Timeout(180)
class RdmaLifecycleRacesTest extends RdmaRig {

    /** Asserts what a failed import reports delivered is exact, and returns the failure. */
    static TransferException exactPrefix(CompletableFuture<Void> f, DeviceBuffer dst, byte[] want) {
        try {
            f.join();
            assertArrayEquals(want, DeviceBytes.HOST.read(dst, 0, want.length), "a complete import is exact");
            return null;
        } catch (CompletionException e) {
            TransferException te = (TransferException) e.getCause();
            int d = te.chunksDelivered();
            assertArrayEquals(Arrays.copyOf(want, d * CHUNK), DeviceBytes.HOST.read(dst, 0, d * CHUNK),
                    "delivered prefix of " + d + " chunks is exact (" + te.getMessage() + ")");
            return te;
        }
    }

    /** A pool whose memory hold throws when closed: a buggy ServedPool of someone's own making. */
    static final class ThrowingHoldPool implements ServedPool {
        final DeviceBuffer buffer;
        volatile Runnable onClose;

        ThrowingHoldPool(DeviceBuffer buffer) {
            this.buffer = buffer;
        }

        @Override
        public DeviceBuffer buffer() {
            return buffer;
        }

        @Override
        public Hold hold(ChunkKey key, long generation, long offset, long length) {
            return null;
        }

        @Override
        public Hold holdMemory(Runnable onClose) {
            this.onClose = onClose;
            return () -> {
                throw new IllegalStateException("this pool's hold fails to close");
            };
        }

        @Override
        public boolean isClosed() {
            return false;
        }
    }

    @Test
    void aPoolWhoseHoldFailsToCloseDoesNotBreakTheTransportsClose() throws InterruptedException {
        RdmaTransport exporter = open(exporterDevice, 1, serving());
        DeviceBuffer memory = exporterDevice.allocate(CHUNK);
        exporter.advertise(new ThrowingHoldPool(memory)).orElseThrow();
        Pool good = new Pool(exporterDevice, 2, 7);
        exporter.advertise(good.pool).orElseThrow();
        assertDoesNotThrow(exporter::close, "close() of a transport serving a pool whose hold throws");
        assertTrue(good.pool.memoryHoldsOpen() == 0, "the well-behaved pool's memory hold was let go");
        assertArrayEquals(liveBefore, Verbs.liveObjects(), "no context nor registration left behind");
        assertEquals(List.of(), threadsLeft());
    }

    @Test
    void closingFromSeveralThreadsAtOnceIsSafeAndLeavesNothing() throws Exception {
        for (int round = 0; round < 10; round++) {
            RdmaTransport exporter = open(exporterDevice, 1, serving());
            RdmaTransport importer = open(importerDevice, 2, importing());
            Pool pool = new Pool(exporterDevice, 8, round);
            List<Offer> offers = pool.offers(exporter.advertise(pool.pool).orElseThrow(), 1);
            DeviceBuffer dst = importerDevice.allocate(pool.bytes.length);
            importer.fetch(offers, dst, inPieces(pool.chunks, 4)).join();
            CountDownLatch go = new CountDownLatch(1);
            List<Thread> closers = new ArrayList<>();
            AtomicReference<Throwable> thrown = new AtomicReference<>();
            for (int i = 0; i < 6; i++) {
                RdmaTransport t = i % 2 == 0 ? exporter : importer;
                Runnable r = i == 5 ? pool.pool::close : t::close;
                Thread th = new Thread(() -> {
                    try {
                        go.await();
                        r.run();
                    } catch (Throwable e) {
                        thrown.compareAndSet(null, e);
                    }
                });
                th.start();
                closers.add(th);
            }
            go.countDown();
            for (Thread th : closers) {
                th.join(30_000);
            }
            if (thrown.get() != null) {
                throw new AssertionError("round " + round + ": a concurrent close threw", thrown.get());
            }
            importerDevice.free(dst);
            assertArrayEquals(liveBefore, Verbs.liveObjects(), "round " + round);
        }
        assertEquals(List.of(), threadsLeft());
    }

    @Test
    void aPoolClosedDuringAFetchIsAMissWithAnExactPrefix() {
        RdmaTransport exporter = open(exporterDevice, 1, serving());
        // 64 QPs of 2 WRs: a 4,096-segment import is 32 windows.
        RdmaTransport importer = open(importerDevice, 2, config(control(false), 4, 8, 8, 4, 30_000));
        for (int round = 0; round < 6; round++) {
            Pool pool = new Pool(exporterDevice, 256, 100 + round);
            List<Offer> offers = pool.offers(exporter.advertise(pool.pool).orElseThrow(), round);
            DeviceBuffer dst = importerDevice.allocate(pool.bytes.length);
            CompletableFuture<Void> f = importer.fetch(offers, dst, inPieces(pool.chunks, 16));
            try {
                Thread.sleep(round * 3L);
            } catch (InterruptedException e) {
                throw new AssertionError(e);
            }
            pool.pool.close();
            TransferException te = exactPrefix(f, dst, pool.bytes);
            if (te != null) {
                assertEquals(TransferFailure.SOURCE_GONE, te.failure(), te.getMessage());
            }
            assertTrue(pool.pool.freed(), "the closed pool's memory is freed once deregistered");
            importerDevice.free(dst);
        }
    }

    @Test
    void closingTheImporterWhileManyFetchesRunCompletesEveryFutureAndLeavesNothing() throws Exception {
        RdmaTransport exporter = open(exporterDevice, 1, serving());
        RdmaTransport importer = open(importerDevice, 2, config(control(false), 4, 16, 4, 8, 30_000));
        Pool pool = new Pool(exporterDevice, 128, 9);
        List<Offer> offers = pool.offers(exporter.advertise(pool.pool).orElseThrow(), 2);
        List<DeviceBuffer> dsts = new ArrayList<>();
        List<CompletableFuture<Void>> fs = new ArrayList<>();
        for (int i = 0; i < 24; i++) { // more than fetchThreads, more than channelsPerPeer: some queue, some wait
            DeviceBuffer dst = importerDevice.allocate(pool.bytes.length);
            dsts.add(dst);
            fs.add(importer.fetch(offers, dst, inPieces(pool.chunks, 16)));
        }
        Thread.sleep(30);
        importer.close();
        for (int i = 0; i < fs.size(); i++) {
            assertTrue(fs.get(i).isDone(), "fetch " + i + " still running after close() returned");
            exactPrefix(fs.get(i), dsts.get(i), pool.bytes);
        }
        exporter.close();
        pool.pool.close();
        assertArrayEquals(liveBefore, Verbs.liveObjects());
        assertEquals(List.of(), threadsLeft());
    }

    @Test
    void closingTheExporterWhileFetchesRunIsAMissWithAnExactPrefix() throws Exception {
        RdmaTransport exporter = open(exporterDevice, 1, serving());
        RdmaTransport importer = open(importerDevice, 2, config(control(false), 4, 16, 8, 8, 30_000));
        Pool pool = new Pool(exporterDevice, 128, 10);
        List<Offer> offers = pool.offers(exporter.advertise(pool.pool).orElseThrow(), 3);
        List<DeviceBuffer> dsts = new ArrayList<>();
        List<CompletableFuture<Void>> fs = new ArrayList<>();
        for (int i = 0; i < 8; i++) {
            DeviceBuffer dst = importerDevice.allocate(pool.bytes.length);
            dsts.add(dst);
            fs.add(importer.fetch(offers, dst, inPieces(pool.chunks, 16)));
        }
        Thread.sleep(20);
        exporter.close();
        for (int i = 0; i < fs.size(); i++) {
            exactPrefix(fs.get(i), dsts.get(i), pool.bytes);
        }
        importer.close();
        pool.pool.close();
        assertArrayEquals(liveBefore, Verbs.liveObjects());
    }

    @Test
    void severalTransportsInOneJvmCrossFetchAndCloseCleanly() throws Exception {
        List<RdmaTransport> exporters = new ArrayList<>();
        List<Pool> pools = new ArrayList<>();
        List<List<Offer>> offers = new ArrayList<>();
        for (int e = 0; e < 3; e++) {
            RdmaTransport t = open(exporterDevice, 10 + e, serving());
            Pool p = new Pool(exporterDevice, 16, 50 + e);
            exporters.add(t);
            pools.add(p);
            offers.add(p.offers(t.advertise(p.pool).orElseThrow(), e));
        }
        // One pool served by two transports at once: two registrations of the same memory.
        offers.add(pools.get(0).offers(exporters.get(1).advertise(pools.get(0).pool).orElseThrow(), 99));
        List<RdmaTransport> importers = List.of(open(importerDevice, 20, importing()),
                open(importerDevice, 21, importing()));
        List<CompletableFuture<Void>> fs = new ArrayList<>();
        List<DeviceBuffer> dsts = new ArrayList<>();
        List<byte[]> wants = new ArrayList<>();
        for (int round = 0; round < 4; round++) {
            for (RdmaTransport imp : importers) {
                for (int e = 0; e < offers.size(); e++) {
                    DeviceBuffer dst = importerDevice.allocate(16 * CHUNK);
                    dsts.add(dst);
                    wants.add(pools.get(e == 3 ? 0 : e).bytes);
                    fs.add(imp.fetch(offers.get(e), dst, inPieces(16, 8)));
                }
            }
        }
        for (int i = 0; i < fs.size(); i++) {
            fs.get(i).join();
            assertArrayEquals(wants.get(i), DeviceBytes.HOST.read(dsts.get(i), 0, 16 * CHUNK), "fetch " + i);
        }
        for (RdmaTransport t : importers) {
            t.close();
        }
        for (RdmaTransport t : exporters) {
            t.close();
        }
        for (Pool p : pools) {
            p.pool.close();
        }
        assertArrayEquals(liveBefore, Verbs.liveObjects());
        assertEquals(List.of(), threadsLeft());
    }

    /**
     * evictStale() removes an RdmaPeer from the map while a fetch that already looked it up goes on to use it: the
     * fetch's channel then lives in a peer nobody can reach, and close() does not tear it down.
     */
    @Test
    void evictStaleRacingFetchesLeavesNoOrphanChannel() throws Exception {
        RdmaTransport exporter = open(exporterDevice, 1, serving());
        TcpConfig fastIdle = control(false).withTimeouts(1000, 2000, 1);
        RdmaTransport importer = open(importerDevice, 2, config(fastIdle, 1, 4, 8, 4, 10_000));
        Pool pool = new Pool(exporterDevice, 1, 11);
        List<Offer> offers = pool.offers(exporter.advertise(pool.pool).orElseThrow(), 4);
        DeviceBuffer dst = importerDevice.allocate(CHUNK);
        AtomicBoolean stop = new AtomicBoolean();
        Thread evictor = new Thread(() -> {
            while (!stop.get()) {
                importer.evictStale();
            }
        });
        evictor.start();
        CopyBatch one = CopyBatch.builder().add(0, 0, CHUNK).build();
        try {
            for (int i = 0; i < 3000; i++) {
                importer.fetch(offers, dst, one).join();
            }
        } finally {
            stop.set(true);
            evictor.join();
        }
        assertDoesNotThrow(importer::close, "close() of the importer");
        exporter.close();
        pool.pool.close();
        assertArrayEquals(liveBefore, Verbs.liveObjects(), "contexts, registrations, channels, queue pairs");
    }

    /**
     * fetch() checks closed, then plans (long for a big batch) and registers the destination; close() meanwhile may
     * have closed the device context. Run in a child JVM: a register on a freed context may crash the process.
     */
    @Test
    void aFetchRacingCloseNeitherCrashesNorLeaks() throws Exception {
        // A crash report goes to the child's stderr (joined to ours), not into the module folder.
        try (ChildJvm child = ChildJvm.start(FetchCloseRace.class, List.of("-XX:+ErrorFileToStderr"), "40")) {
            String result;
            try {
                result = child.awaitLine("RESULT", Duration.ofSeconds(150));
            } catch (IllegalStateException e) {
                throw new AssertionError("the child JVM died (native crash?) or hung: " + e.getMessage(), e);
            }
            System.out.println("" + result);
            assertEquals("RESULT closeThrew=0 leaked=0 registeredAfterClose=0", result.replaceAll(" firstLeak=.*", ""), result);
        }
    }

    /** Child: rounds of one importer whose close() races a fetch with a big batch. */
    public static final class FetchCloseRace {
        static final java.util.Map<String, Integer> OUTCOMES = new java.util.concurrent.ConcurrentHashMap<>();
        static final java.util.concurrent.atomic.AtomicInteger REGISTERED_AFTER_CLOSE = new java.util.concurrent.atomic.AtomicInteger();

        public static void main(String[] args) throws Exception {
            int rounds = Integer.parseInt(args[0]);
            HostDevice device = new HostDevice(Files.createTempDirectory("fetch-close-race"));
            long[] base = Verbs.liveObjects();
            int closeThrew = 0;
            int leaked = 0;
            String firstLeak = "";
            // An endpoint nobody serves: the race is before any network I/O.
            Endpoint endpoint = new RdmaEndpoint(new InetSocketAddress(InetAddress.getLoopbackAddress(), 9),
                    new byte[16], 0, 1, 0x10000, 1L << 30).encode();
            int bytes = 8 << 20;
            List<Offer> offers = List.of(Offer.of(new ChunkKey(1, 1), 1, ProcessIdentity.current(), endpoint, 0, bytes,
                    1, 1, Long.MAX_VALUE));
            CopyBatch.Builder b = CopyBatch.builder();
            for (int s = bytes / 8 - 1; s >= 0; s--) {
                b.add((long) s * 8, (long) s * 8, 8);
            }
            CopyBatch batch = b.build();
            Random r = new Random(1);
            for (int i = 0; i < rounds; i++) {
                DeviceBuffer dst = device.allocate(bytes);
                RdmaTransport t = RdmaTransport.open(device, 2, RdmaConfig.of(TcpConfig.of(SECRET).withBind(null)));
                CountDownLatch started = new CountDownLatch(1);
                Thread f = new Thread(() -> {
                    started.countDown();
                    try {
                        t.fetch(offers, dst, batch).exceptionally(e -> {
                            String m = e.getCause() == null ? e.toString() : e.getCause().getMessage();
                            OUTCOMES.merge(m.length() > 40 ? m.substring(0, 40) : m, 1, Integer::sum);
                            if (m.contains("register the destination")) {
                                System.out.println("REGISTERED-AFTER-CLOSE " + m);
                                REGISTERED_AFTER_CLOSE.incrementAndGet();
                            }
                            return null;
                        }).join();
                    } catch (IllegalStateException closed) {
                        OUTCOMES.merge("ISE", 1, Integer::sum); // closed before fetch looked: fine
                    }
                });
                f.start();
                started.await();
                java.util.concurrent.locks.LockSupport.parkNanos(r.nextInt(30_000_000));
                try {
                    t.close();
                } catch (RuntimeException e) {
                    closeThrew++;
                    System.out.println("CLOSE-THREW " + e);
                }
                f.join();
                long[] now = Verbs.liveObjects();
                if (!Arrays.equals(base, now)) {
                    leaked++;
                    if (firstLeak.isEmpty()) {
                        firstLeak = Arrays.toString(now) + " vs " + Arrays.toString(base) + " at round " + i;
                    }
                    base = now;
                }
                device.free(dst);
            }
            System.out.println("RESULT closeThrew=" + closeThrew + " leaked=" + leaked + " registeredAfterClose=" + REGISTERED_AFTER_CLOSE.get() + " firstLeak=" + firstLeak + " outcomes=" + OUTCOMES);
            System.out.flush();
            device.close();
        }
    }
}
