package io.kvmarket.redis;

import io.kvmarket.device.host.HostDevice;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.pool.ExportPool;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.Withdrawal;
import io.lettuce.core.RedisClient;
import io.lettuce.core.api.StatefulRedisConnection;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * RedisRegistry's pipelined withdrawIfUnused(List, long[]) and of the export pool evicting through
 * it: batches past the pipeline window, duplicates, a script cache flushed under it, a paused and a killed Redis.
 */
@Timeout(60)
class RedisBatchWithdrawTest extends RedisServerTest {



    RedisRegistry registry() {
        return registry(Duration.ofMillis(200));
    }

    /**
     * A batch larger than the pipeline window (512), of offers in every state, duplicates included, answers exactly
     * what one call per offer answers on a twin set.
     */
    @Test
    void aBatchPastThePipelineWindowMatchesOneCallEach() {
        RedisRegistry a = registry();
        Random rnd = new Random(7);
        int n = 700;
        List<Offer> batch = new ArrayList<>();
        List<Offer> twins = new ArrayList<>();
        List<Long> used = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            Offer o = RedisRegistryAbuseTest.offer(i, 1 + i);
            Offer t = RedisRegistryAbuseTest.offer(100_000 + i, 1 + i);
            int state = rnd.nextInt(4);
            if (state != 3) {
                a.publish(o);
                a.publish(t);
            }
            long lastUse = a.clockMillis() - 5_000;
            if (state == 1) {
                assertTrue(a.pin(o, 30_000));
                assertTrue(a.pin(t, 30_000));
            } else if (state == 2) {
                assertTrue(a.pin(o, 30_000));
                a.unpin(o);
                assertTrue(a.pin(t, 30_000));
                a.unpin(t);
            }
            batch.add(o);
            twins.add(t);
            used.add(lastUse);
            if (rnd.nextInt(20) == 0) { // a duplicate right after
                batch.add(o);
                twins.add(null);
                used.add(lastUse);
            }
        }
        long[] usedSince = used.stream().mapToLong(Long::longValue).toArray();
        Withdrawal[] got = a.withdrawIfUnused(batch, usedSince);
        assertEquals(batch.size(), got.length);
        Withdrawal previous = null;
        for (int i = 0; i < batch.size(); i++) {
            Withdrawal want;
            if (twins.get(i) == null) {
                // a duplicate: decided after the first, which withdrew it or kept it
                want = previous;
            } else {
                want = a.withdrawIfUnused(twins.get(i), usedSince[i]);
            }
            assertEquals(want, got[i], "offer " + i);
            previous = got[i];
        }
    }

    /** The script cache flushed between batches: the pipeline resends each script whole, each decided once. */
    @Test
    void aFlushedScriptCacheIsResentAndDecidesOnce() {
        RedisRegistry a = registry();
        Offer idle = RedisRegistryAbuseTest.offer(1, 1);
        Offer pinned = RedisRegistryAbuseTest.offer(2, 2);
        a.publish(idle);
        a.publish(pinned);
        assertTrue(a.pin(pinned, 30_000));
        a.withdrawIfUnused(List.of(), new long[0]);
        a.withdrawIfUnused(List.of(RedisRegistryAbuseTest.offer(3, 3)), new long[] {0}); // script cached
        try (RedisClient c = RedisClient.create(server.uri()); StatefulRedisConnection<String, String> conn = c.connect()) {
            conn.sync().scriptFlush();
        } catch (Exception e) {
            throw new AssertionError(e);
        }
        long now = a.clockMillis();
        assertArrayEquals(new Withdrawal[] {Withdrawal.WITHDRAWN, Withdrawal.PINNED},
                a.withdrawIfUnused(List.of(idle, pinned), new long[] {now, now}));
        assertFalse(a.isCurrent(idle));
        assertTrue(a.isCurrent(pinned));
    }

    private static Offer poolOffer(long k, long gen, long offset) {
        return Offer.of(RedisRegistryAbuseTest.key(k), 7, ProcessIdentity.current(),
                new Endpoint(Endpoint.DEVICE_IPC, new byte[] {7}), offset, 64, 42, gen,
                System.currentTimeMillis() + 60_000);
    }

    private static List<Offer> fill(ExportPool pool, RedisRegistry r, int chunks, long firstGen) {
        List<Offer> offers = new ArrayList<>();
        for (int i = 0; i < chunks; i++) {
            try (ExportPool.Reservation res = pool.reserve(1)) {
                Offer o = poolOffer(firstGen + i, ExportPool.nextGeneration(), res.offset(0));
                r.publish(o);
                res.published(0, o);
                offers.add(o);
            }
        }
        return offers;
    }

    /**
     * End to end over Redis: a pool of 4, chunk 0 pinned by another process, chunk 1 imported elsewhere since; a
     * reserve of 2 evicts chunks 2 and 3 (least recently used that are free to go), keeping 0 and 1.
     */
    @Test
    void aPoolOverRedisKeepsLruAndTheSecondChance() throws Exception {
        RedisRegistry a = registry();
        RedisRegistry other = registry();
        try (HostDevice device = new HostDevice(dir)) {
            ExportPool pool = new ExportPool(device, a, 4 * 64, 64);
            toClose.add(pool);
            List<Offer> offers = fill(pool, a, 4, 1);
            Thread.sleep(5);
            assertTrue(other.pin(offers.get(0), 30_000));
            assertTrue(other.pin(offers.get(1), 30_000));
            other.unpin(offers.get(1));
            Thread.sleep(5);
            try (ExportPool.Reservation r = pool.reserve(2)) {
                assertEquals(2, r.size());
                assertEquals(offers.get(2).offset(), r.offset(0));
                assertEquals(offers.get(3).offset(), r.offset(1));
            }
            assertTrue(a.isCurrent(offers.get(0)));
            assertTrue(a.isCurrent(offers.get(1)));
            assertFalse(a.isCurrent(offers.get(2)));
            assertFalse(a.isCurrent(offers.get(3)));
            // now only the second chance is left for chunk 1; chunk 0 stays pinned
            try (ExportPool.Reservation r = pool.reserve(2)) {
                assertEquals(2, r.size(), "the two freed slots come back free");
            }
            try (ExportPool.Reservation r = pool.reserve(4)) {
                assertEquals(3, r.size(), "2 free + chunk 1 on its second chance; the pinned chunk stays");
            }
            assertTrue(a.isCurrent(offers.get(0)));
            assertFalse(a.isCurrent(offers.get(1)));
            other.unpin(offers.get(0));
            pool.close();
        }
    }

    /**
     * Redis stalled (SIGSTOP) while a pool of 16 evicts: nothing is reused, nothing escapes reserve, and the pool
     * answers within a few command timeouts (one pipelined round trip, not 16 timeouts in a row under the lock).
     * After Redis resumes the chunks are evicted normally.
     */
    @Test
    void aStalledRedisKeepsTheMemoryAndAnswersPromptly() throws Exception {
        RedisRegistry a = registry();
        try (HostDevice device = new HostDevice(dir)) {
            ExportPool pool = new ExportPool(device, a, 16 * 64, 64);
            toClose.add(pool);
            List<Offer> offers = fill(pool, a, 16, 1);
            server.pause();
            int got;
            try (ExportPool.Reservation r = pool.reserve(16)) {
                got = r.size();
            } finally {
                server.resume();
            }
            assertEquals(0, got, "nothing reused while the outcome is unknown");
            try (ExportPool.Reservation r = pool.reserve(16)) {
                assertEquals(16, r.size());
            }
            for (Offer o : offers) {
                assertFalse(a.isCurrent(o));
            }
            pool.close();
        }
    }

    /** Redis killed: reserve keeps every chunk and throws nothing. */
    @Test
    void aKilledRedisKeepsTheMemory() throws Exception {
        RedisRegistry a = registry();
        try (HostDevice device = new HostDevice(dir)) {
            ExportPool pool = new ExportPool(device, a, 3 * 64, 64);
            fill(pool, a, 3, 1);
            server.kill();
            try (ExportPool.Reservation r = pool.reserve(3)) {
                assertEquals(0, r.size());
            }
            assertEquals(3, pool.publishedChunks());
            pool.close(); // withdrawals fail: the memory is kept until exit, no throw
        }
    }
}
