package io.kvmarket.publicapi;

import io.kvmarket.KvMarketplace;
import io.kvmarket.LoadResult;
import io.kvmarket.Match;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.kv.PagedKvCache;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.registry.InProcessRegistry;
import io.kvmarket.registry.shm.NodeLocalRegistry;
import io.kvmarket.transfer.DeviceIpcTransport;
import io.kvmarket.testkit.KvFixture;
import org.junit.jupiter.api.RepeatedTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;

import static io.kvmarket.testkit.KvPattern.range;
import static io.kvmarket.testkit.KvPattern.tokens;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

@Timeout(120)
class CloseRaceTest {

    @TempDir
    Path dir;

    /**
     * E exports, matches, loads (from P) on 8 threads; I imports E's prompts on 4 threads; E is closed from the
     * main thread mid-way. Afterwards: no offer naming E's pool, E's pool file deleted, every reported import
     * exact, no call hangs.
     */
    @RepeatedTest(4)
    void closeRacingEverythingLeavesNothingAndKeepsImportsExact() throws Exception {
        try (NodeLocalRegistry registry = NodeLocalRegistry.open(dir, 1024);
             HostDevice dE = new HostDevice(dir); HostDevice dP = new HostDevice(dir); HostDevice dI = new HostDevice(dir)) {
            KvFixture p = Rig.engine(dP, registry, 8, 50, t -> t);
            Set<Path> before = Rig.memoryFiles(dir);
            KvFixture e = Rig.engine(dE, registry, 6, 50, t -> t);
            Set<Path> eFiles = new HashSet<>(Rig.memoryFiles(dir));
            eFiles.removeAll(before);
            assertEquals(2, eFiles.size());
            KvFixture imp = Rig.engine(dI, registry, 2, 50, t -> t);
            for (int s = 0; s < 4; s++) {
                p.fill(range(s * 4, 4), 4, 200 + s);
                p.market.export(tokens(64, 200 + s), 64, range(s * 4, 4));
            }
            ConcurrentLinkedQueue<String> problems = new ConcurrentLinkedQueue<>();
            AtomicLong exactHits = new AtomicLong();
            AtomicBoolean stop = new AtomicBoolean();
            Endpoint ePool = e.poolEndpoint();
            List<Thread> threads = new ArrayList<>();
            CountDownLatch start = new CountDownLatch(1);
            // exporters on E: salts 100..115, thread w owns blocks [w*4, w*4+4)
            for (int w = 0; w < 4; w++) {
                int[] blocks = range(w * 4, 4);
                int ww = w;
                threads.add(new Thread(() -> {
                    try {
                        start.await();
                        while (true) {
                            int salt = 100 + ww * 4 + ThreadLocalRandom.current().nextInt(4);
                            e.fill(blocks, 4, salt);
                            e.market.export(tokens(64, salt), 64, blocks);
                        }
                    } catch (IllegalStateException closed) {
                        // expected once closed
                    } catch (Throwable t) {
                        problems.add("E export: " + t);
                    }
                }));
            }
            // loaders on E from P: blocks [16 + w*4, ...)
            for (int w = 0; w < 4; w++) {
                int[] blocks = range(16 + w * 4, 4);
                threads.add(new Thread(() -> {
                    try {
                        start.await();
                        while (true) {
                            int salt = 200 + ThreadLocalRandom.current().nextInt(4);
                            Match m = e.market.match(tokens(64, salt), 64);
                            LoadResult r;
                            try {
                                r = e.market.load(m, blocks).get(20, TimeUnit.SECONDS);
                            } catch (IllegalStateException closed) {
                                e.market.release(m);
                                throw closed;
                            }
                            int wrong = e.firstWrongBlock(blocks, r.tokensImported() / 16, salt);
                            if (wrong >= 0) {
                                problems.add("E load of " + salt + " wrong at block " + wrong + " " + r);
                            }
                        }
                    } catch (IllegalStateException closed) {
                        // expected
                    } catch (Throwable t) {
                        problems.add("E load: " + t);
                    }
                }));
            }
            // importers on I of E's prompts
            for (int w = 0; w < 4; w++) {
                int[] blocks = range(w * 4, 4);
                threads.add(new Thread(() -> {
                    try {
                        start.await();
                        while (!stop.get()) {
                            int salt = 100 + ThreadLocalRandom.current().nextInt(16);
                            Match m = imp.market.match(tokens(64, salt), 64);
                            LoadResult r = imp.market.load(m, blocks).get(20, TimeUnit.SECONDS);
                            int wrong = imp.firstWrongBlock(blocks, r.tokensImported() / 16, salt);
                            if (wrong >= 0) {
                                problems.add("I load of " + salt + " wrong at block " + wrong + " " + r);
                            } else if (r.tokensImported() > 0) {
                                exactHits.incrementAndGet();
                            }
                        }
                    } catch (Throwable t) {
                        problems.add("I load: " + t);
                    }
                }));
            }
            threads.forEach(Thread::start);
            start.countDown();
            Thread.sleep(300 + ThreadLocalRandom.current().nextInt(200));
            long t0 = System.nanoTime();
            CompletableFuture<Void> c1 = CompletableFuture.runAsync(e.market::close);
            CompletableFuture<Void> c2 = CompletableFuture.runAsync(e.market::close);
            c1.get(30, TimeUnit.SECONDS);
            c2.get(30, TimeUnit.SECONDS);
            long closeMs = (System.nanoTime() - t0) / 1_000_000;
            // immediately after close: nothing of E offered
            for (int salt = 100; salt < 116; salt++) {
                for (ChunkKey k : e.market.hasher().keys(tokens(64, salt), 64)) {
                    Offer o = registry.lookup(k);
                    if (o != null && o.endpoints().contains(ePool)) {
                        problems.add("offer of closed E still served: " + o);
                    }
                }
            }
            Thread.sleep(300);
            stop.set(true);
            for (Thread t : threads) {
                t.join(30_000);
                if (t.isAlive()) {
                    problems.add("a thread hangs: " + Arrays.toString(t.getStackTrace()));
                }
            }
            Set<Path> left = new HashSet<>(Rig.memoryFiles(dir));
            left.retainAll(eFiles);
            imp.market.close();
            p.market.close();
            assertTrue(problems.isEmpty(), String.join("\n", problems));
            assertTrue(closeMs < 5_000, "close took " + closeMs);
            assertEquals(1, left.size(), "E's pool file still there after everything ended");
            assertTrue(exactHits.get() > 0, "no import of E's prompts hit; test proves little");
        }
    }

    /** close() racing lease renewals every ~33 ms: no offer of the closed marketplace stays served or revives. */
    @RepeatedTest(5)
    void closeDuringLeaseRenewalLeavesNothingServed() throws Exception {
        try (NodeLocalRegistry registry = NodeLocalRegistry.open(dir, 1024); HostDevice d = new HostDevice(dir)) {
            PagedKvCache cache = new PagedKvCache(d.allocate(PagedKvCache.requiredBytes(KvFixture.LAYOUT, KvFixture.BLOCKS)),
                    KvFixture.LAYOUT, KvFixture.BLOCKS);
            KvMarketplace m = KvMarketplace.builder().namespace(KvFixture.NS).kvCache(cache).device(d).registry(registry)
                    .chunkTokens(KvFixture.CHUNK).poolBytes(16 * KvFixture.chunkBytes(KvFixture.LAYOUT, KvFixture.CHUNK)).offerLeaseMillis(100).build();
            List<ChunkKey> keys = new ArrayList<>();
            for (int s = 0; s < 8; s++) {
                m.export(tokens(64, 300 + s), 64, range(s * 4, 4));
                keys.addAll(Arrays.asList(m.hasher().keys(tokens(64, 300 + s), 64)));
            }
            Thread.sleep(150 + ThreadLocalRandom.current().nextInt(100)); // survived renewals
            for (ChunkKey k : keys) {
                assertTrue(registry.lookup(k) != null, "renewal failed before close");
            }
            m.close();
            for (int i = 0; i < 5; i++) {
                for (ChunkKey k : keys) {
                    assertEquals(null, registry.lookup(k), "offer served after close");
                }
                Thread.sleep(40);
            }
            assertEquals(0, registry.liveSlots());
        }
    }

    private Set<Path> memoryFiles() {
        try {
            return Rig.memoryFiles(dir);
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
    }

    /**
     * After a load callback threw, a close() later run on that same device thread but outside any load callback
     * must wait for a running export as usual (the completion flag must not leak).
     */
    @Test
    void theCompletionFlagDoesNotLeakAfterACallbackThrew() throws Exception {
        InProcessRegistry registry = new InProcessRegistry();
        try (HostDevice dA = new HostDevice(dir); HostDevice dB = new HostDevice(dir)) {
            KvFixture exporter = Rig.engine(dA, registry, 4);
            KvFixture a = Rig.engine(dA, registry, 4);
            int[] p = tokens(64, 21);
            exporter.fill(range(0, 4), 4, 21);
            exporter.market.export(p, 64, range(0, 4));
            Match m = a.market.match(p, 64);
            CompletableFuture<Void> b1 = CloseHandoffTest.busy(dA, 10);
            CompletableFuture<LoadResult> l = a.market.load(m, range(8, 4));
            l.thenRun(() -> {
                throw new RuntimeException("engine bug in a callback");
            });
            l.get(20, TimeUnit.SECONDS);
            // now, on dA's copy thread, unmarked: close B while B's export runs on dB
            Set<Path> before = Rig.memoryFiles(dir);
            KvFixture bRig = Rig.engine(dB, registry, 4);
            Set<Path> bFiles = new HashSet<>(Rig.memoryFiles(dir));
            bFiles.removeAll(before);
            CompletableFuture<Void> busyB = CloseHandoffTest.busy(dB, 60);
            CompletableFuture<?> bExport = CompletableFuture.supplyAsync(
                    () -> bRig.market.export(tokens(64, 22), 64, range(0, 4)));
            Thread.sleep(100);
            CompletableFuture<Void> b2 = CloseHandoffTest.busy(dA, 10);
            CompletableFuture<Integer> bFilesAfterClose = b2.thenApply(x -> {
                bRig.market.close();
                Set<Path> left = new HashSet<>(memoryFiles());
                left.retainAll(bFiles);
                return left.size();
            });
            assertEquals(1, bFilesAfterClose.get(30, TimeUnit.SECONDS),
                    "close on the device thread, outside a load callback, waited for B's export and freed B's pool");
            b1.get(); busyB.get(30, TimeUnit.SECONDS); bExport.get(30, TimeUnit.SECONDS);
            a.market.close();
            exporter.market.close();
        }
    }
}
