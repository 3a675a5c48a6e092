package io.kvmarket.redis;

import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.PublishOutcome;
import io.kvmarket.registry.Withdrawal;
import io.kvmarket.testkit.RegistryContractTest;
import io.lettuce.core.RedisClient;
import io.lettuce.core.api.StatefulRedisConnection;
import io.lettuce.core.api.sync.RedisCommands;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * On one Redis, the pins, checks and withdrawals of many chunks run as one script per window of keys: one call per
 * window, each key answered exactly as a call of its own would answer it, whatever its hash holds (absent, foreign,
 * another offer, damaged pin fields). A pin field another writer damaged reads as no pin: the chunk can still be
 * pinned and withdrawn.
 */
@Timeout(120)
class RedisBatchedStepsTest extends RedisServerTest {

    private static final long NOW = 1_800_000_000_000L;

    private RedisCommands<String, String> raw() {
        RedisClient client = RedisClient.create(server.uri());
        toClose.add(client::shutdown);
        StatefulRedisConnection<String, String> c = client.connect();
        toClose.add(c);
        return c.sync();
    }

    private static Offer offer(int i, long generation) {
        return new Offer(RegistryContractTest.key(i), 7, ProcessIdentity.current(),
                List.of(RegistryContractTest.ipc(1, (int) generation)), 4096L * i, 4096, 42, generation,
                NOW + 3_600_000);
    }

    private static long evalshaCalls(RedisCommands<String, String> raw) {
        for (String line : raw.info("commandstats").split("\r\n")) {
            if (line.startsWith("cmdstat_evalsha:")) {
                return Long.parseLong(line.replaceAll("^cmdstat_evalsha:calls=(\\d+),.*", "$1"));
            }
        }
        return 0;
    }

    @Test
    void manyChunksAreOneScriptCallPerWindowOfKeys() {
        RedisRegistry r = registry(Duration.ofSeconds(2), () -> NOW);
        RedisCommands<String, String> raw = raw();
        List<Offer> offers = new ArrayList<>();
        for (int i = 0; i < 300; i++) {
            offers.add(offer(i, 1));
        }
        assertEquals(300, Arrays.stream(r.publishAll(offers)).filter(o -> o == PublishOutcome.PUBLISHED).count());
        int windows = (300 + RedisRegistry.SCRIPT_WINDOW - 1) / RedisRegistry.SCRIPT_WINDOW;
        Offer warm = offer(999, 1); // Redis learns each script once (EVAL); counted from then on
        r.publish(warm);
        r.pinAll(List.of(warm), 10_000);
        r.areCurrent(List.of(warm));
        r.unpinAll(List.of(warm));
        r.withdrawIfUnused(List.of(warm), new long[] {NOW});
        boolean[] all = new boolean[300];
        Arrays.fill(all, true);

        raw.configResetstat();
        assertArrayEquals(all, r.pinAll(offers, 10_000));
        assertEquals(windows, evalshaCalls(raw), "pins");
        raw.configResetstat();
        assertArrayEquals(all, r.areCurrent(offers));
        assertEquals(windows, evalshaCalls(raw), "checks");
        raw.configResetstat();
        r.unpinAll(offers);
        assertEquals(windows, evalshaCalls(raw), "unpins");
        for (Offer o : offers) {
            assertEquals("0", raw.hget(OfferCodec.hashKey(prefix, o.key()), "pc"), "every pin undone");
        }
        raw.configResetstat();
        long[] since = new long[300];
        Arrays.fill(since, NOW);
        Withdrawal[] out = r.withdrawIfUnused(offers, since);
        assertEquals(windows, evalshaCalls(raw), "withdrawals");
        assertTrue(Arrays.stream(out).allMatch(w -> w == Withdrawal.WITHDRAWN), Arrays.toString(out));
        assertTrue(Arrays.stream(r.lookupEach(offers.stream().map(Offer::key).toList())).allMatch(o -> o == null),
                "every chunk withdrawn");
    }

    /** What a reviewer found: a pin count that is not an integer made every pin and withdrawal of the chunk fail. */
    @Test
    void damagedPinFieldsReadAsNoPin() {
        RedisRegistry r = registry(Duration.ofSeconds(2), () -> NOW);
        RedisCommands<String, String> raw = raw();
        String[][] damage = {{"pc", "garbage"}, {"pc", "1.5"}, {"pc", "-3"}, {"pc", "1e400"},
                {"pe", "99999999999999999999999"}, {"pe", "zz"}, {"lp", "007"}, {"lp", "-"}};
        for (int i = 0; i < damage.length; i++) {
            Offer o = offer(1000 + i, 1);
            assertEquals(PublishOutcome.PUBLISHED, r.publish(o));
            String hash = OfferCodec.hashKey(prefix, o.key());
            raw.hset(hash, damage[i][0], damage[i][1]);
            String what = Arrays.toString(damage[i]);
            assertArrayEquals(new boolean[] {true}, r.pinAll(List.of(o), 10_000), what);
            r.unpinAll(List.of(o));
            assertEquals(Withdrawal.WITHDRAWN, r.withdrawIfUnused(List.of(o), new long[] {NOW})[0], what);
            assertEquals(0, raw.exists(hash), what);

            assertEquals(PublishOutcome.PUBLISHED, r.publish(o));
            raw.hset(hash, damage[i][0], damage[i][1]);
            assertTrue(r.pin(o, 10_000), what);
            r.unpin(o);
            assertEquals(Withdrawal.WITHDRAWN, r.withdrawIfUnused(o, NOW), what);
        }
    }

    /**
     * Randomized: the same states under two prefixes, one driven by the batched calls, the other by one call per
     * chunk in the same order; every answer and every hash afterwards must be the same.
     */
    @Test
    void aBatchAnswersEveryChunkAsCallsOfItsOwnWould() {
        RedisCommands<String, String> raw = raw();
        for (int seed = 1; seed <= 6; seed++) {
            Random rnd = new Random(seed);
            String prefixA = prefix + "a" + seed;
            String prefixB = prefix + "b" + seed;
            RedisRegistry batched = track(new RedisRegistry(server.uri(), prefixA, Duration.ofSeconds(2), () -> NOW));
            RedisRegistry single = track(new RedisRegistry(server.uri(), prefixB, Duration.ofSeconds(2), () -> NOW));
            int n = 150 + rnd.nextInt(200);
            List<Offer> asked = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                Offer o = offer(i, 1 + rnd.nextInt(3));
                String[] values = {null, "0", "2", "garbage", "-1", Long.toString(NOW - 5), Long.toString(NOW + 5),
                        "99999999999999999999"};
                int state = rnd.nextInt(5);
                for (String p : List.of(prefixA, prefixB)) {
                    String hash = OfferCodec.hashKey(p, o.key());
                    switch (state) {
                        case 0 -> { } // absent
                        case 1 -> raw.rpush(hash, "foreign");
                        case 2 -> (p.equals(prefixA) ? batched : single).publish(offer(i, 9)); // another offer
                        default -> (p.equals(prefixA) ? batched : single).publish(o);
                    }
                }
                if (state >= 3) {
                    for (String field : List.of("pc", "pe", "lp")) {
                        String v = values[rnd.nextInt(values.length)];
                        if (v != null) {
                            raw.hset(OfferCodec.hashKey(prefixA, o.key()), field, v);
                            raw.hset(OfferCodec.hashKey(prefixB, o.key()), field, v);
                        }
                    }
                }
                asked.add(o);
                if (rnd.nextInt(10) == 0) {
                    asked.add(o); // the same chunk twice in one batch
                }
            }
            long lease = 1 + rnd.nextInt(20_000);
            boolean[] pins = new boolean[asked.size()];
            for (int i = 0; i < pins.length; i++) {
                pins[i] = single.pin(asked.get(i), lease);
            }
            assertArrayEquals(pins, batched.pinAll(asked, lease), "pins, seed " + seed);
            boolean[] current = new boolean[asked.size()];
            for (int i = 0; i < current.length; i++) {
                current[i] = single.isCurrent(asked.get(i));
            }
            assertArrayEquals(current, batched.areCurrent(asked), "checks, seed " + seed);
            List<Offer> unpinned = asked.subList(0, asked.size() / 2);
            unpinned.forEach(single::unpin);
            batched.unpinAll(unpinned);
            List<Offer> released = asked.subList(asked.size() / 2, asked.size());
            boolean[] stillCurrent = new boolean[released.size()];
            for (int i = 0; i < stillCurrent.length; i++) {
                stillCurrent[i] = single.isCurrent(released.get(i));
                single.unpin(released.get(i));
            }
            assertArrayEquals(stillCurrent, batched.releaseCurrent(released), "check and release, seed " + seed);
            long[] since = new long[asked.size()];
            Withdrawal[] withdrawals = new Withdrawal[asked.size()];
            for (int i = 0; i < since.length; i++) {
                since[i] = NOW + rnd.nextInt(11) - 5;
                withdrawals[i] = single.withdrawIfUnused(asked.get(i), since[i]);
            }
            assertArrayEquals(withdrawals, batched.withdrawIfUnused(asked, since), "withdrawals, seed " + seed);
            for (Offer o : asked) {
                String a = OfferCodec.hashKey(prefixA, o.key());
                String b = OfferCodec.hashKey(prefixB, o.key());
                assertEquals(raw.type(b), raw.type(a), "type, seed " + seed);
                if (raw.type(a).equals("hash")) {
                    Map<String, String> ha = raw.hgetall(a);
                    Map<String, String> hb = raw.hgetall(b);
                    ha.remove("o"); // binary identity: compared through isCurrent above
                    hb.remove("o");
                    assertEquals(hb, ha, "hash of " + o.key() + ", seed " + seed);
                }
            }
        }
    }

    private RedisRegistry track(RedisRegistry r) {
        toClose.add(r);
        return r;
    }
}
