package io.kvmarket.redis;

import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.InProcessRegistry;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.registry.PublishOutcome;
import io.kvmarket.registry.RegistryException;
import io.kvmarket.registry.Withdrawal;
import io.lettuce.core.RedisClient;
import io.lettuce.core.api.StatefulRedisConnection;
import io.lettuce.core.api.sync.RedisCommands;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import io.lettuce.core.codec.StringCodec;
import io.lettuce.core.output.StatusOutput;
import io.lettuce.core.protocol.CommandArgs;
import io.lettuce.core.protocol.CommandType;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.atomic.AtomicLong;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/** Hostile-review probes of RedisRegistry (package-private access for OfferCodec). */
@Timeout(60)
class RedisRegistryAbuseTest extends RedisServerTest {


    RedisClient rawClient;
    StatefulRedisConnection<String, String> rawConn;
    RedisCommands<String, String> raw;

    @BeforeEach
    void connectRaw() {
        rawClient = RedisClient.create(server.uri());
        rawConn = rawClient.connect();
        raw = rawConn.sync();
    }

    @AfterEach
    void disconnectRaw() {
        rawConn.close();
        rawClient.shutdown();
    }

    RedisRegistry registry() {
        return registry(Duration.ofMillis(200), System::currentTimeMillis);
    }

    static ChunkKey key(long i) {
        return new ChunkKey(0xabc0_0000L + i, 0x9e3779b97f4a7c15L * (i + 1));
    }

    static Offer offer(long k, long nodeId, long generation, long expiry) {
        return Offer.of(key(k), nodeId, ProcessIdentity.current(),
                new Endpoint(Endpoint.DEVICE_IPC, new byte[] {7, (byte) generation}), 4096 * generation, 4096, 42,
                generation, expiry);
    }

    static Offer offer(long k, long generation) {
        return offer(k, 7, generation, System.currentTimeMillis() + 60_000);
    }

    void clientPauseWrite(long ms) {
        raw.dispatch(CommandType.CLIENT, new StatusOutput<>(StringCodec.UTF8),
                new CommandArgs<>(StringCodec.UTF8).add("PAUSE").add(ms).add("WRITE"));
    }

    static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            throw new RuntimeException(e);
        }
    }

    // ------------------------------------------------------------------------------------------------------------

    /**
     * A publish that fails with RegistryException (the Exporter then returns the slot to the pool, whose memory is
     * reused) must not later become a served offer. CLIENT PAUSE WRITE holds every script that may write, the
     * publication's read included, past the command timeout, and Redis runs what it held when the pause ends.
     */
    @Test
    void aPublishThatFailedWithATimeoutIsNeverServedLater() {
        RedisRegistry a = registry(Duration.ofMillis(100), System::currentTimeMillis);
        RedisRegistry b = registry(Duration.ofSeconds(2), System::currentTimeMillis);
        assertEquals(PublishOutcome.PUBLISHED, a.publish(offer(0, 1))); // owner beaten, PUBLISH loaded
        Offer ghost = offer(1, 2);
        clientPauseWrite(400);
        assertThrows(RegistryException.class, () -> a.publish(ghost), "publish must time out while writes are paused");
        sleep(700);
        Offer seen = b.lookup(ghost.key());
        assertNull(seen, "a publish that failed (slot freed, memory reused) is served to importers: " + seen);
    }

    /** pinAll: "false where it failed (the registry's failure included)". */
    @Test
    void pinAllReturnsFalsesWhenRedisIsDownInsteadOfThrowing() throws Exception {
        RedisRegistry a = registry();
        Offer o = offer(1, 1);
        assertEquals(PublishOutcome.PUBLISHED, a.publish(o)); // PIN script not loaded yet
        server.kill();
        boolean[] pinned = assertDoesNotThrow(() -> a.pinAll(List.of(o, o), 1000),
                "pinAll must report the registry's failure as false, as the interface's contract says");
        assertArrayEquals(new boolean[] {false, false}, pinned);
    }

    /** unpin is a no-op when the publication is gone (Redis restarted empty); unpinAll must be too. */
    @Test
    void unpinAllAfterARestartIsANoOpLikeUnpin() throws Exception {
        RedisRegistry a = registry(Duration.ofSeconds(2), System::currentTimeMillis);
        Offer o = offer(1, 1);
        assertEquals(PublishOutcome.PUBLISHED, a.publish(o));
        assertArrayEquals(new boolean[] {true}, a.pinAll(List.of(o), 10_000)); // loads PIN
        a.unpinAll(List.of(o)); // loads UNPIN
        server.restart();
        long deadline = System.nanoTime() + 5_000_000_000L;
        while (true) { // wait for the connection to come back
            try {
                a.lookup(o.key());
                break;
            } catch (RegistryException e) {
                if (System.nanoTime() > deadline) {
                    throw e;
                }
                sleep(50);
            }
        }
        assertDoesNotThrow(() -> a.unpinAll(List.of(o)), "unpinAll of a gone publication must be a no-op like unpin");
        assertDoesNotThrow(() -> a.unpin(o));
    }

    /** Foreign values are "skipped with a log line, never trusted": a hash where a record belongs included. */
    @Test
    void aWrongTypedValueUnderThePrefixIsSkippedNotAnError() {
        RedisRegistry a = registry();
        Offer o0 = offer(0, 1);
        assertEquals(PublishOutcome.PUBLISHED, a.publish(o0));
        raw.hset(OfferCodec.hashKey(prefix, key(1)), "o", "hostile");
        raw.rpush(OfferCodec.hashKey(prefix, key(2)), "hostile");
        List<Offer> found = assertDoesNotThrow(() -> a.lookupPrefix(new ChunkKey[] {key(0), key(1)}, 2),
                "a foreign value must end the prefix, not fail the lookup");
        assertEquals(List.of(o0), found);
        assertNull(assertDoesNotThrow(() -> a.lookup(key(2))));
    }

    @Test
    void aWrongTypedValueUnderThePrefixDoesNotBlockPublishingItsKeyForever() {
        RedisRegistry a = registry();
        raw.sadd(OfferCodec.hashKey(prefix, key(3)), "hostile");
        PublishOutcome out = assertDoesNotThrow(() -> a.publish(offer(3, 1)),
                "foreign data is replaced like any foreign hash value, not a permanent registry failure");
        assertEquals(PublishOutcome.PUBLISHED, out);
    }

    /** Hostile records that are not offers: property loop, seeded. */
    @Test
    void garbageRecordsAreNeverServedAndAreReplacedByAPublish() {
        RedisRegistry a = registry();
        Random rnd = new Random(42);
        Offer other = offer(999, 5);
        String[] leases = {"NaN", "1e999", "-5", "", " 1", "99999999999999999999", "0x10", "Infinity"};
        for (int i = 0; i < 60; i++) {
            ChunkKey k = key(100 + i);
            String hk = OfferCodec.hashKey(prefix, k);
            byte[] id;
            switch (i % 5) {
                case 0 -> id = OfferCodec.identity(other); // an offer of another chunk
                case 1 -> { id = new byte[rnd.nextInt(200)]; rnd.nextBytes(id); }
                case 2 -> { id = OfferCodec.identity(offer(100 + i, 3)); id[73] ^= 0x55; } // endpoints length
                case 3 -> { id = OfferCodec.identity(offer(100 + i, 3)); id = java.util.Arrays.copyOf(id, id.length + 3); }
                default -> id = OfferCodec.identity(offer(100 + i, 3));
            }
            String lease = i % 5 == 4 ? leases[rnd.nextInt(leases.length)] : Long.toString(Long.MAX_VALUE);
            try (StatefulRedisConnection<String, byte[]> c = rawClient.connect(
                    io.lettuce.core.codec.RedisCodec.of(StringCodec.UTF8, io.lettuce.core.codec.ByteArrayCodec.INSTANCE))) {
                byte[] header = (lease + ",0,0,0;").getBytes();
                byte[] junk = new byte[100_000];
                rnd.nextBytes(junk);
                byte[] record = java.util.Arrays.copyOf(header, header.length + id.length + junk.length);
                System.arraycopy(id, 0, record, header.length, id.length);
                if (i % 5 != 4) { // junk after a valid identity: its endpoints length no longer fits
                    System.arraycopy(junk, 0, record, header.length + id.length, junk.length);
                } else {
                    record = java.util.Arrays.copyOf(record, header.length + id.length);
                }
                c.sync().set(hk, record);
            }
            Offer seen;
            try {
                seen = a.lookup(k);
            } catch (RuntimeException e) {
                throw new AssertionError("round " + i + ": lookup of garbage threw " + e, e);
            }
            if (seen != null) {
                // case 4 with a parseable lease is a real offer of this owner; anything else must not be served
                assertTrue(i % 5 == 4 && seen.key().equals(k) && seen.leaseExpiryMs() > System.currentTimeMillis(),
                        "round " + i + ": garbage served as " + seen);
                continue;
            }
            Offer mine = offer(100 + i, 9);
            assertEquals(PublishOutcome.PUBLISHED, a.publish(mine), "round " + i);
            assertEquals(mine, a.lookup(k), "round " + i);
        }
    }

    /**
     * "a lease past the end of the clock holds until released": a pin whose expiry saturated at Long.MAX_VALUE must
     * hold however far the clock goes; Lua doubles make Long.MAX_VALUE - 1 equal to Long.MAX_VALUE.
     */
    @Test
    void aSaturatedPinHoldsUntilReleasedEvenAtTheEndOfTheClock() {
        AtomicLong clock = new AtomicLong(Long.MAX_VALUE - 10_000);
        RedisRegistry a = registry(Duration.ofSeconds(2), clock::get);
        InProcessRegistry ref = new InProcessRegistry(clock::get);
        toClose.add(ref);
        Offer o = offer(1, 7, 1, Long.MAX_VALUE);
        for (OfferRegistry r : List.<OfferRegistry>of(ref, a)) {
            clock.set(Long.MAX_VALUE - 10_000);
            assertEquals(PublishOutcome.PUBLISHED, r.publish(o));
            assertTrue(r.pin(o, Long.MAX_VALUE));
            clock.set(Long.MAX_VALUE - 1);
            assertEquals(Withdrawal.PINNED, r.withdrawIfUnused(o, Long.MAX_VALUE), r.getClass().getSimpleName());
            r.withdraw(o);
        }
    }

    /** A pin whose lease has not expired must keep the offer (clock values beyond 2^53 ms lose Lua precision). */
    @Test
    void aLivePinHoldsAtLargeClockValues() {
        AtomicLong clock = new AtomicLong(Long.MAX_VALUE - 1_000);
        RedisRegistry a = registry(Duration.ofSeconds(2), clock::get);
        Offer o = offer(1, 7, 1, Long.MAX_VALUE);
        assertEquals(PublishOutcome.PUBLISHED, a.publish(o));
        assertTrue(a.pin(o, 500)); // expires at MAX - 500
        clock.set(Long.MAX_VALUE - 900); // 400 ms before the pin's expiry
        assertEquals(Withdrawal.PINNED, a.withdrawIfUnused(o, Long.MAX_VALUE));
    }

    /**
     * Publish must not replace a live offer. Another registry that read the owner dead (its key had expired while
     * Redis stalled) keeps that verdict for 250 ms and replaces the offer the owner publishes after its heartbeat
     * came back: two PUBLISHED for one free key, the first offer silently lost.
     */
    @Test
    void aStaleDeadLivenessVerdictMustNotReplaceALiveOffer() {
        RedisRegistry a = registry(Duration.ofSeconds(2), System::currentTimeMillis);
        RedisRegistry b = registry(Duration.ofSeconds(2), System::currentTimeMillis);
        Offer a0 = offer(0, 11, 1, System.currentTimeMillis() + 60_000); // node 11: b never beats it
        assertEquals(PublishOutcome.PUBLISHED, a.publish(a0));
        String ownerKey = OfferCodec.ownerKey(prefix, 11, ProcessIdentity.current());
        raw.del(ownerKey); // as after a stall longer than the owner TTL
        assertNull(b.lookup(a0.key())); // b reads the owner dead
        raw.psetex(ownerKey, RedisRegistry.OWNER_TTL_MS, "\u0001"); // the heartbeat is back: owner alive again
        Offer a1 = offer(1, 11, 2, System.currentTimeMillis() + 60_000);
        assertEquals(PublishOutcome.PUBLISHED, a.publish(a1));
        Offer b1 = offer(1, 12, 3, System.currentTimeMillis() + 60_000);
        assertEquals(PublishOutcome.ALREADY_OFFERED, b.publish(b1), "a live owner's fresh offer was replaced");
    }

    /** Exactly one PUBLISHED per free key, from many threads of two registries; lookups only return published offers. */
    @Test
    void concurrentPublishersOfTwoRegistriesGetExactlyOnePublishedPerKey() throws Exception {
        RedisRegistry a = registry(Duration.ofSeconds(2), System::currentTimeMillis);
        RedisRegistry b = registry(Duration.ofSeconds(2), System::currentTimeMillis);
        int keys = 200;
        int threads = 8;
        java.util.concurrent.ConcurrentHashMap<ChunkKey, List<Offer>> won = new java.util.concurrent.ConcurrentHashMap<>();
        java.util.concurrent.CyclicBarrier barrier = new java.util.concurrent.CyclicBarrier(threads);
        List<Thread> ts = new ArrayList<>();
        List<Throwable> errors = java.util.Collections.synchronizedList(new ArrayList<>());
        for (int t = 0; t < threads; t++) {
            int tt = t;
            Thread th = new Thread(() -> {
                try {
                    RedisRegistry r = tt % 2 == 0 ? a : b;
                    for (int k = 0; k < keys; k++) {
                        if (k % 20 == 0) {
                            barrier.await();
                        }
                        Offer o = offer(k, 20 + tt, 1000L * tt + k, System.currentTimeMillis() + 60_000);
                        if (r.publish(o) == PublishOutcome.PUBLISHED) {
                            won.computeIfAbsent(o.key(), x -> java.util.Collections.synchronizedList(new ArrayList<>())).add(o);
                        }
                    }
                } catch (Throwable e) {
                    errors.add(e);
                }
            });
            ts.add(th);
            th.start();
        }
        for (Thread th : ts) {
            th.join();
        }
        assertEquals(List.of(), errors);
        for (int k = 0; k < keys; k++) {
            List<Offer> w = won.get(key(k));
            assertNotNull(w, "key " + k + " has no PUBLISHED");
            assertEquals(1, w.size(), "key " + k + ": " + w);
            assertEquals(w.get(0), b.lookup(key(k)));
        }
    }

    /** Calls after close fail fast with RegistryException or IllegalStateException; close twice is fine. */
    @Test
    @Timeout(20)
    void callsAfterCloseFailFast() {
        RedisRegistry a = new RedisRegistry(server.uri(), prefix, Duration.ofMillis(200),
                System::currentTimeMillis);
        Offer o = offer(1, 1);
        assertEquals(PublishOutcome.PUBLISHED, a.publish(o));
        a.pinAll(List.of(o), 1000);
        a.unpinAll(List.of(o));
        a.close();
        assertDoesNotThrow(a::close);
        List<Runnable> calls = List.of(() -> a.publish(offer(2, 2)), () -> a.lookup(o.key()),
                () -> a.lookupPrefix(new ChunkKey[] {o.key()}, 1), () -> a.pin(o, 100), () -> a.unpin(o),
                () -> a.isCurrent(o), () -> a.pinAll(List.of(o), 100), () -> a.unpinAll(List.of(o)),
                () -> a.areCurrent(List.of(o)), () -> a.withdrawIfUnused(o, 0), () -> a.withdraw(o),
                () -> a.renew(o, System.currentTimeMillis() + 1000),
                () -> a.withdrawIfUnused(List.of(o), new long[] {0}));
        for (int i = 0; i < calls.size(); i++) {
            long t0 = System.nanoTime();
            try {
                calls.get(i).run();
                if (i != 6) { // pinAll may answer falses
                    fail("call " + i + " after close succeeded");
                }
            } catch (RegistryException | IllegalStateException expected) {
                // fine
            } catch (RuntimeException e) {
                fail("call " + i + " after close threw " + e);
            }
            assertTrue(System.nanoTime() - t0 < 1_000_000_000L, "call " + i + " took too long");
        }
    }

    /** A registry's Lettuce threads are gone after close, with Redis paused too, and close does not hang. */
    @Test
    @Timeout(30)
    void closeLeavesNoThreadsEvenWithRedisPaused() throws Exception {
        long before = lettuceThreads();
        for (int i = 0; i < 3; i++) {
            RedisRegistry a = new RedisRegistry(server.uri(), prefix, Duration.ofMillis(200),
                    System::currentTimeMillis);
            a.publish(offer(i, i + 1));
            if (i == 2) {
                server.pause();
            }
            long t0 = System.nanoTime();
            a.close();
            assertTrue(System.nanoTime() - t0 < 5_000_000_000L, "close took " + (System.nanoTime() - t0) / 1e6 + " ms");
        }
        server.resume();
        long deadline = System.nanoTime() + 5_000_000_000L;
        while (lettuceThreads() > before && System.nanoTime() < deadline) {
            sleep(100);
        }
        assertEquals(before, lettuceThreads(), threadNames());
    }

    static long lettuceThreads() {
        return Thread.getAllStackTraces().keySet().stream().filter(t -> t.isAlive()
                && (t.getName().startsWith("lettuce") || t.getName().startsWith("kvmarket-redis"))).count();
    }

    static String threadNames() {
        return Thread.getAllStackTraces().keySet().stream().map(Thread::getName).sorted().toList().toString();
    }

    /** Zero means "never time out" to Lettuce: a registry opened with it hung on a paused Redis. */
    @Test
    void commandTimeoutsUnderOneMillisecondAreRejected() {
        for (Duration bad : List.of(Duration.ZERO, Duration.ofNanos(500_000), Duration.ofMillis(-1))) {
            assertThrows(IllegalArgumentException.class,
                    () -> new RedisRegistry(server.uri(), prefix, bad, null).close(), bad.toString());
        }
    }

    /** open() against a stalled Redis fails within a bound instead of hanging the marketplace's construction. */
    @Test
    @Timeout(10)
    void openAgainstAPausedRedisFailsWithinSeconds() {
        server.pause();
        long t0 = System.nanoTime();
        try {
            RedisRegistry r = RedisRegistry.open(server.uri(), prefix);
            r.close();
            fail("opened against a paused Redis");
        } catch (RegistryException expected) {
            System.err.println("open failed after " + (System.nanoTime() - t0) / 1_000_000 + " ms: " + expected);
        }
        long ms = (System.nanoTime() - t0) / 1_000_000;
        assertTrue(ms < 5_000, "open took " + ms + " ms with a 2 s opening bound");
    }

    /** Redis stalled longer than the owner TTL then resumed: a live owner's offers are served again shortly. */
    @Test
    @Timeout(30)
    void afterAStallLongerThanTheOwnerTtlLiveOwnersAreServedAgain() {
        RedisRegistry a = registry(Duration.ofMillis(100), System::currentTimeMillis);
        RedisRegistry b = registry(Duration.ofSeconds(2), System::currentTimeMillis);
        Offer o = offer(1, 31, 1, System.currentTimeMillis() + 120_000);
        assertEquals(PublishOutcome.PUBLISHED, a.publish(o));
        server.pause();
        sleep(RedisRegistry.OWNER_TTL_MS + 1_000);
        server.resume();
        long deadline = System.nanoTime() + 3_000_000_000L;
        Offer seen = null;
        while (System.nanoTime() < deadline && seen == null) {
            seen = b.lookup(o.key());
            sleep(50);
        }
        assertEquals(o, seen);
    }

    /** Two registries of one server: closing one (which shuts down its own client) must not break the other. */
    @Test
    void closingOneRegistryDoesNotBreakAnotherOfTheSameServer() {
        RedisRegistry a = new RedisRegistry(server.uri(), prefix + "a", Duration.ofMillis(200), System::currentTimeMillis);
        RedisRegistry b = new RedisRegistry(server.uri(), prefix + "b", Duration.ofMillis(200), System::currentTimeMillis);
        toClose.add(b);
        Offer o = offer(1, 1);
        assertEquals(PublishOutcome.PUBLISHED, b.publish(o));
        a.close();
        assertEquals(o, assertDoesNotThrow(() -> b.lookup(o.key())));
    }
}
