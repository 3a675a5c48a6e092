package io.kvmarket.publicapi;

import io.kvmarket.LoadResult;
import io.kvmarket.Match;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.registry.InProcessRegistry;
import io.kvmarket.testkit.KvFixture;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.HashSet;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

import static io.kvmarket.testkit.KvPattern.range;
import static io.kvmarket.testkit.KvPattern.tokens;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

@Timeout(60)
class CloseInCallbackTest {

    @TempDir
    Path dir;

    /** A load callback starts a second load, then closes: no stall, second load exact, pool freed after it. */
    @Test
    void closeInALoadCallbackThatStartedAnotherLoad() throws Exception {
        InProcessRegistry registry = new InProcessRegistry();
        try (HostDevice dX = new HostDevice(dir); HostDevice dI = new HostDevice(dir)) {
            KvFixture exporter = Rig.engine(dX, registry, 8);
            Set<Path> before = Rig.memoryFiles(dir);
            KvFixture imp = Rig.engine(dI, registry, 4);
            Set<Path> mine = new HashSet<>(Rig.memoryFiles(dir));
            mine.removeAll(before);
            exporter.fill(range(0, 4), 4, 31);
            exporter.market.export(tokens(64, 31), 64, range(0, 4));
            exporter.fill(range(4, 4), 4, 32);
            exporter.market.export(tokens(64, 32), 64, range(4, 4));
            Match m1 = imp.market.match(tokens(64, 31), 64);
            Match m2 = imp.market.match(tokens(64, 32), 64);
            CompletableFuture<Void> busy = CloseHandoffTest.busy(dI, 20);
            AtomicReference<CompletableFuture<LoadResult>> second = new AtomicReference<>();
            AtomicLong closeMs = new AtomicLong();
            CountDownLatch done = new CountDownLatch(1);
            CompletableFuture<LoadResult> first = imp.market.load(m1, range(8, 4));
            first.whenComplete((r, e) -> {
                second.set(imp.market.load(m2, range(16, 4)));
                long t0 = System.nanoTime();
                imp.market.close();
                closeMs.set((System.nanoTime() - t0) / 1_000_000);
                done.countDown();
            });
            assertTrue(done.await(30, TimeUnit.SECONDS));
            LoadResult r1 = first.get(10, TimeUnit.SECONDS);
            LoadResult r2 = second.get().get(20, TimeUnit.SECONDS);
            busy.get(20, TimeUnit.SECONDS);
            Thread.sleep(200);
            Set<Path> left = new HashSet<>(Rig.memoryFiles(dir));
            left.retainAll(mine);
            exporter.market.close();
            assertTrue(closeMs.get() < 5_000, "close took " + closeMs.get());
            assertEquals(64, r1.tokensImported());
            assertEquals(-1, imp.firstWrongBlock(range(8, 4), 4, 31));
            assertEquals(64, r2.tokensImported(), r2.toString());
            assertEquals(-1, imp.firstWrongBlock(range(16, 4), 4, 32));
            assertEquals(1, left.size(), "the pool was not freed after the second load ended");
        }
    }

    /** A match taken before close, released after: the exporter can evict those chunks again. */
    @Test
    void aMatchTakenBeforeCloseIsRefusedAfterAndItsReleaseUnpins() throws Exception {
        InProcessRegistry registry = new InProcessRegistry();
        try (HostDevice d = new HostDevice(dir)) {
            KvFixture exporter = Rig.engine(d, registry, 2);
            KvFixture imp = Rig.engine(d, registry, 4, 60_000, t -> t);
            exporter.fill(range(0, 4), 4, 33);
            exporter.market.export(tokens(64, 33), 64, range(0, 4));
            Match m = imp.market.match(tokens(64, 33), 64);
            assertEquals(64, m.tokens());
            imp.market.close();
            try {
                imp.market.load(m, range(8, 4));
                throw new AssertionError("load after close accepted");
            } catch (IllegalStateException expected) {
                imp.market.release(m);
            }
            exporter.fill(range(4, 4), 4, 34);
            assertEquals(2, exporter.market.export(tokens(64, 34), 64, range(4, 4)).chunksPublished());
            exporter.market.close();
        }
    }
}
