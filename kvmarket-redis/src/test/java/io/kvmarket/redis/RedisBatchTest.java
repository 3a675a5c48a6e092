package io.kvmarket.redis;

import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.PublishOutcome;
import io.kvmarket.testkit.RegistryContractTest;
import io.lettuce.core.RedisClient;
import io.lettuce.core.api.StatefulRedisConnection;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Objects;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The Redis registry's batches (publishAll, lookupEach, pinAll) as they meet a stalled Redis, a restarted one that
 * forgot its scripts, 10,000 offers at once, duplicates, foreign values and racing publishers: bounded, exact, and
 * never an unknown outcome where nothing failed.
 */
@Timeout(180)
class RedisBatchTest extends RedisServerTest {



    /** Waits until the client reconnected (a plain HGET answers), as a caller would see Redis healthy again. */
    static void awaitReconnected(RedisRegistry r) throws InterruptedException {
        long deadline = System.nanoTime() + 10_000_000_000L;
        while (true) {
            try {
                r.isCurrent(offer(424_242, 7, 1));
                return;
            } catch (RuntimeException e) {
                if (System.nanoTime() > deadline) {
                    throw e;
                }
                Thread.sleep(50);
            }
        }
    }

    static ChunkKey key(int i) {
        return RegistryContractTest.key(i);
    }

    static Offer offer(int i, long nodeId, long gen) {
        return new Offer(key(i), nodeId, ProcessIdentity.current(), List.of(RegistryContractTest.ipc(1, (int) gen)),
                4096L * gen, 4096, 42, gen, System.currentTimeMillis() + 60_000);
    }

    static List<Offer> offers(int n, long nodeId, long genBase) {
        List<Offer> out = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            out.add(offer(i, nodeId, genBase + i));
        }
        return out;
    }

    /** publishAll of 50 offers on the SIGSTOPped server: every outcome unknown. */
    private void assertEveryOutcomeUnknownWhilePaused(RedisRegistry r) {
        List<Offer> batch = offers(50, 7, 100);
        server.pause();
        PublishOutcome[] out;
        try {
            out = r.publishAll(batch);
        } finally {
            server.resume();
        }
        assertTrue(Arrays.stream(out).allMatch(Objects::isNull), "all unknown");
    }

    /** A Redis SIGSTOPped mid-session: every outcome of a batch unknown, after one window's timeout, not one each. */
    @Test
    @Timeout(30) // a batch that fell back to one call at a time would wait 50 command timeouts
    void publishAllOnAPausedRedisIsBoundedByTheCommandTimeout() throws Exception {
        try (RedisRegistry r = registry(Duration.ofSeconds(1))) {
            assertEquals(PublishOutcome.PUBLISHED, r.publish(offer(10_000, 7, 1))); // the owner's key exists
            assertEveryOutcomeUnknownWhilePaused(r);
        }
    }

    /** Same, on a Redis that forgot its scripts before it stalled. */
    @Test
    @Timeout(30) // a batch that fell back to one call at a time would wait 50 command timeouts
    void publishAllOnAPausedRedisAfterRestartIsBounded() throws Exception {
        try (RedisRegistry r = registry(Duration.ofSeconds(1))) {
            assertEquals(PublishOutcome.PUBLISHED, r.publish(offer(10_000, 7, 1)));
            server.restart(); // forgets the scripts
            awaitReconnected(r);
            assertEveryOutcomeUnknownWhilePaused(r);
        }
    }

    /** Redis restarted (empty, scripts forgotten) and healthy again: lookupEach should answer, as lookupPrefix does. */
    @Test
    void lookupEachAfterARestartOfAHealthyRedis() throws Exception {
        try (RedisRegistry r = registry(Duration.ofMillis(500))) {
            assertEquals(PublishOutcome.PUBLISHED, r.publish(offer(1, 7, 1)));
            assertNotNull(r.lookupEach(List.of(key(1)))[0]);
            server.restart();
            awaitReconnected(r);
            assertDoesNotThrow(() -> r.lookupEach(List.of(key(1))), "Redis is up: nothing to fail about");
        }
    }

    /** After a restart, a healthy Redis: pinAll of a freshly republished offer must pin it. */
    @Test
    void pinAllAfterARestartOfAHealthyRedis() throws Exception {
        try (RedisRegistry r = registry(Duration.ofMillis(500))) {
            Offer o = offer(1, 7, 1);
            assertEquals(PublishOutcome.PUBLISHED, r.publish(o));
            assertArrayEquals(new boolean[] {true}, r.pinAll(List.of(o), 10_000));
            server.restart();
            awaitReconnected(r);
            assertEquals(PublishOutcome.PUBLISHED, r.publish(o)); // reloads READ and PUBLISH, not PIN
            assertArrayEquals(new boolean[] {true}, r.pinAll(List.of(o), 10_000),
                    "Redis is up and the offer current: the pin must land");
        }
    }

    /** After a restart, a healthy Redis: publishAll must publish, not report every write as unknown. */
    @Test
    void publishAllAfterARestartOfAHealthyRedis() throws Exception {
        try (RedisRegistry r = registry(Duration.ofMillis(500))) {
            assertEquals(PublishOutcome.PUBLISHED, r.publish(offer(10_000, 7, 1)));
            server.restart();
            awaitReconnected(r);
            assertNull(r.lookupEach(List.of(key(0)))[0], "Redis restarted empty");
            PublishOutcome[] out = r.publishAll(offers(10, 7, 100));
            assertEquals(List.of(PublishOutcome.PUBLISHED), Arrays.stream(out).distinct().toList(),
                    "Redis is up and empty: " + Arrays.toString(out));
        }
    }

    @Test
    void duplicatesAndEmptyBatches() throws Exception {
        try (RedisRegistry r = registry(Duration.ofMillis(500))) {
            assertEquals(0, r.publishAll(List.of()).length);
            assertEquals(0, r.lookupEach(List.of()).length);
            Offer a = offer(1, 7, 1);
            Offer b = offer(1, 7, 2);
            PublishOutcome[] out = r.publishAll(List.of(a, a, b, offer(2, 7, 3)));
            assertEquals(List.of(PublishOutcome.PUBLISHED, PublishOutcome.ALREADY_OFFERED,
                    PublishOutcome.ALREADY_OFFERED, PublishOutcome.PUBLISHED), Arrays.asList(out));
            assertTrue(r.isCurrent(a));
            Offer[] found = r.lookupEach(List.of(key(1), key(1), key(3), key(2)));
            assertEquals(a, found[0]);
            assertEquals(a, found[1]);
            assertEquals(null, found[2]);
            assertNotNull(found[3]);
        }
    }

    @Test
    void foreignDeadAndExpired() throws Exception {
        try (RedisRegistry r = registry(Duration.ofMillis(500));
             RedisClient raw = RedisClient.create(server.uri());
             StatefulRedisConnection<String, String> c = raw.connect()) {
            c.sync().set(OfferCodec.hashKey(prefix, key(0)), "junk");
            c.sync().hset(OfferCodec.hashKey(prefix, key(1)), "x", "y");
            c.sync().set(OfferCodec.hashKey(prefix, key(2)), Long.MAX_VALUE + ",0,0,0;garbage");
            c.sync().set(OfferCodec.hashKey(prefix, key(3)), Long.MAX_VALUE + ",0,0,0;!");
            c.sync().lpush(OfferCodec.hashKey(prefix, key(4)), "a");
            r.publish(RegistryContractTest.offer(key(5), RegistryContractTest.deadProcess(), 5,
                    System.currentTimeMillis() + 60_000));
            r.publish(new Offer(key(6), 7, ProcessIdentity.current(), List.of(RegistryContractTest.ipc(1)), 0, 4096,
                    42, 6, System.currentTimeMillis() + 50));
            Thread.sleep(100);
            Offer[] before = r.lookupEach(Arrays.asList(RegistryContractTest.keys(7)));
            assertTrue(Arrays.stream(before).allMatch(Objects::isNull), Arrays.toString(before));
            PublishOutcome[] out = r.publishAll(offers(7, 9, 100));
            assertEquals(List.of(PublishOutcome.PUBLISHED), Arrays.stream(out).distinct().toList(),
                    Arrays.toString(out));
            assertEquals(7, r.lookupPrefix(RegistryContractTest.keys(7), 7).size());
        }
    }

    /** 10,000 offers through the default registry (100 ms timeout) on a healthy Redis: every one published. */
    @Test
    void tenThousandOffersOnAHealthyRedis() throws Exception {
        try (RedisRegistry r = RedisRegistry.open(server.uri(), prefix)) {
            r.publish(offer(100_000, 7, 1));
            List<Offer> batch = offers(10_000, 7, 10);
            PublishOutcome[] out = r.publishAll(batch);
            long published = Arrays.stream(out).filter(o -> o == PublishOutcome.PUBLISHED).count();
            long unknown = Arrays.stream(out).filter(Objects::isNull).count();
            assertEquals(10_000, published, "a healthy Redis; windows of the pipeline timed out: unknown=" + unknown);
            Offer[] found = r.lookupEach(batch.stream().map(Offer::key).toList());
            assertEquals(10_000, Arrays.stream(found).filter(Objects::nonNull).count());
        }
    }

    /** Four registries publish the same 300 keys at once: exactly one PUBLISHED per key, the one that is current. */
    @Test
    void concurrentPublishAllExactlyOneWinnerPerKey() throws Exception {
        int n = 300;
        int regs = 4;
        List<RedisRegistry> rs = new ArrayList<>();
        ExecutorService ex = Executors.newFixedThreadPool(regs);
        try {
            for (int j = 0; j < regs; j++) {
                rs.add(registry(Duration.ofSeconds(2)));
            }
            for (int round = 0; round < 5; round++) {
                String p = prefix;
                List<List<Offer>> batches = new ArrayList<>();
                for (int j = 0; j < regs; j++) {
                    List<Offer> b = new ArrayList<>();
                    for (int i = 0; i < n; i++) {
                        b.add(offer(round * n + i, 100 + j, 1_000_000L * j + round * n + i));
                    }
                    batches.add(b);
                }
                List<Future<PublishOutcome[]>> fs = new ArrayList<>();
                for (int j = 0; j < regs; j++) {
                    RedisRegistry r = rs.get(j);
                    List<Offer> b = batches.get(j);
                    fs.add(ex.submit(() -> r.publishAll(b)));
                }
                List<PublishOutcome[]> outs = new ArrayList<>();
                for (Future<PublishOutcome[]> f : fs) {
                    outs.add(f.get());
                }
                for (int i = 0; i < n; i++) {
                    int winners = 0;
                    for (int j = 0; j < regs; j++) {
                        assertNotNull(outs.get(j)[i]);
                        if (outs.get(j)[i] == PublishOutcome.PUBLISHED) {
                            winners++;
                            assertTrue(rs.get(0).isCurrent(batches.get(j).get(i)), "winner is current");
                        }
                    }
                    assertEquals(1, winners, "key " + i + " round " + round);
                }
            }
        } finally {
            ex.shutdownNow();
            rs.forEach(RedisRegistry::close);
        }
    }
}
