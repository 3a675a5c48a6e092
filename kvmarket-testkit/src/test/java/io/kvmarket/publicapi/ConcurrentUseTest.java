package io.kvmarket.publicapi;

import io.kvmarket.LoadResult;
import io.kvmarket.Match;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.registry.InProcessRegistry;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.registry.shm.NodeLocalRegistry;
import io.kvmarket.testkit.KvFixture;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
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

/** Several marketplaces in one JVM, one-chunk pools, 1 ms pins, everything at once, then close under load. */
@Timeout(90)
class ConcurrentUseTest {

    @TempDir
    Path dir;

    @ParameterizedTest
    @ValueSource(strings = {"in-process", "node-local"})
    void hitsAreAlwaysTheRightBytesAndCloseUnderLoadLeavesNothingOffered(String kind) throws Exception {
        OfferRegistry registry = kind.equals("in-process") ? new InProcessRegistry() : NodeLocalRegistry.open(dir, 1024);
        int markets = 3;
        int workers = 4;
        List<HostDevice> devices = new ArrayList<>();
        List<KvFixture> rigs = new ArrayList<>();
        for (int i = 0; i < markets; i++) {
            HostDevice d = new HostDevice(dir);
            devices.add(d);
            rigs.add(Rig.engine(d, registry, 1 + i % 2, 1, t -> t));
        }
        ConcurrentLinkedQueue<String> problems = new ConcurrentLinkedQueue<>();
        AtomicLong hits = new AtomicLong();
        AtomicLong closedRefusals = new AtomicLong();
        CountDownLatch done = new CountDownLatch(markets * workers);
        AtomicBoolean stop = new AtomicBoolean();
        for (int mi = 0; mi < markets; mi++) {
            KvFixture rig = rigs.get(mi);
            for (int w = 0; w < workers; w++) {
                int[] exportBlocks = range(w * 16, 4);
                int[] importBlocks = range(w * 16 + 8, 4);
                Thread t = new Thread(() -> {
                    try {
                        ThreadLocalRandom rnd = ThreadLocalRandom.current();
                        while (!stop.get()) {
                            int salt = 1 + rnd.nextInt(6);
                            int[] tok = tokens(64, salt);
                            try {
                                if (rnd.nextBoolean()) {
                                    rig.fill(exportBlocks, 4, salt);
                                    rig.market.export(tok, 64, exportBlocks);
                                } else {
                                    Match m = rig.market.match(tok, 64);
                                    if (rnd.nextInt(8) == 0) {
                                        rig.market.release(m);
                                        continue;
                                    }
                                    LoadResult r = rig.market.load(m, importBlocks).get(20, TimeUnit.SECONDS);
                                    int blocks = r.tokensImported() / 16;
                                    if (blocks > 0) {
                                        hits.incrementAndGet();
                                        int bad = rig.firstWrongBlock(importBlocks, blocks, salt);
                                        if (bad >= 0) {
                                            problems.add("wrong bytes at logical block " + bad + " in a hit " + r);
                                        }
                                    }
                                }
                            } catch (IllegalStateException closed) {
                                closedRefusals.incrementAndGet();
                                if (!String.valueOf(closed.getMessage()).contains("closed")) {
                                    problems.add("unexpected " + closed);
                                }
                                Thread.sleep(1);
                            }
                        }
                    } catch (Throwable e) {
                        problems.add("worker died: " + e);
                    } finally {
                        done.countDown();
                    }
                });
                t.setDaemon(true);
                t.start();
            }
        }
        Thread.sleep(2_000);
        List<Thread> closers = new ArrayList<>();
        for (KvFixture rig : rigs) {
            for (int k = 0; k < 2; k++) {
                Thread c = new Thread(rig.market::close);
                c.start();
                closers.add(c);
            }
        }
        for (Thread c : closers) {
            c.join(30_000);
            assertTrue(!c.isAlive(), "close() hung");
        }
        Thread.sleep(200);
        stop.set(true);
        assertTrue(done.await(30, TimeUnit.SECONDS), "workers hung");
        long left = registry instanceof InProcessRegistry ip ? ip.size() : ((NodeLocalRegistry) registry).liveSlots();
        registry.close();
        devices.forEach(HostDevice::close);
        assertEquals(List.of(), new ArrayList<>(problems));
        assertEquals(0, left, "offers left in the registry after every marketplace closed");
        assertTrue(hits.get() > 0, "no hits at all: the stress proved nothing");
        System.out.println(kind + ": hits " + hits + ", refusals after close " + closedRefusals);
    }
}
