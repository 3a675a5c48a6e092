package io.kvmarket.redis;

import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.PublishOutcome;
import io.kvmarket.registry.Withdrawal;
import io.kvmarket.testkit.RegistryContractTest;
import io.lettuce.core.RedisClient;
import io.lettuce.core.SetArgs;
import io.lettuce.core.api.StatefulRedisConnection;
import io.lettuce.core.api.sync.RedisCommands;
import io.lettuce.core.codec.ByteArrayCodec;
import io.lettuce.core.codec.RedisCodec;
import io.lettuce.core.codec.StringCodec;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * On one Redis, the pins, checks and withdrawals of many chunks run as one script per window of keys: one call per
 * window, each key answered exactly as a call of its own would answer it, whatever its key holds (absent, foreign,
 * another offer, a damaged header). A record whose header another writer damaged is foreign: nothing pins it, its
 * owner's withdrawal finds it gone, and the next publication replaces it.
 */
@Timeout(120)
class RedisBatchedStepsTest extends RedisServerTest {

    private static final long NOW = 1_800_000_000_000L;

    private RedisCommands<String, byte[]> raw() {
        RedisClient client = RedisClient.create(server.uri());
        toClose.add(client::shutdown);
        StatefulRedisConnection<String, byte[]> c = client.connect(RedisCodec.of(StringCodec.UTF8,
                ByteArrayCodec.INSTANCE));
        toClose.add(c);
        return c.sync();
    }

    /**
     * Rewrites the header fields of the record under {@code key} (pins, pin expiry, last pinned; null keeps one) as
     * another writer might, keeping its lease, identity and expiry.
     */
    private static void setHeader(RedisCommands<String, byte[]> raw, String key, String... fields) {
        byte[] record = raw.get(key);
        int end = 0;
        while (record[end] != ';') {
            end++;
        }
        String[] header = new String(record, 0, end, StandardCharsets.US_ASCII).split(",", -1);
        for (int i = 0; i < fields.length; i++) {
            if (fields[i] != null) {
                header[1 + i] = fields[i];
            }
        }
        byte[] h = (String.join(",", header) + ";").getBytes(StandardCharsets.US_ASCII);
        byte[] changed = Arrays.copyOf(h, h.length + record.length - end - 1);
        System.arraycopy(record, end + 1, changed, h.length, record.length - end - 1);
        raw.set(key, changed, SetArgs.Builder.keepttl());
    }

    private static Offer offer(int i, long generation) {
        return new Offer(RegistryContractTest.key(i), 7, ProcessIdentity.current(),
                List.of(RegistryContractTest.ipc(1, (int) generation)), 4096L * i, 4096, 42, generation,
                NOW + 3_600_000);
    }

    private static long evalshaCalls(RedisCommands<String, byte[]> raw) {
        return calls(raw, "evalsha");
    }

    /** Calls of {@code command} Redis counted since its statistics were reset. */
    private static long calls(RedisCommands<String, byte[]> raw, String command) {
        for (String line : raw.info("commandstats").split("\r\n")) {
            if (line.startsWith("cmdstat_" + command + ":")) {
                return Long.parseLong(line.replaceAll("^cmdstat_" + command + ":calls=(\\d+),.*", "$1"));
            }
        }
        return 0;
    }

    @Test
    void manyChunksAreOneScriptCallPerWindowOfKeys() {
        RedisRegistry r = registry(Duration.ofSeconds(2), () -> NOW);
        RedisCommands<String, byte[]> raw = raw();
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
            assertEquals(0, OfferCodec.header(raw.get(OfferCodec.hashKey(prefix, o.key()))).pins(),
                    "every pin undone");
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

    /** A clock that reads negative (one built on nanoTime, say) still gives a long lease its key's full life. */
    @Test
    void aNegativeClockKeepsALongLeasesKeyAlive() {
        RedisRegistry r = registry(Duration.ofSeconds(2), () -> -1_000L);
        RedisCommands<String, byte[]> raw = raw();
        Offer o = new Offer(RegistryContractTest.key(5000), 7, ProcessIdentity.current(),
                List.of(RegistryContractTest.ipc(1, 1)), 0, 4096, 42, 1, Long.MAX_VALUE);
        assertEquals(PublishOutcome.PUBLISHED, r.publish(o));
        String key = OfferCodec.hashKey(prefix, o.key());
        assertTrue(raw.pttl(key) > 86_400_000L, "the key expires in " + raw.pttl(key) + " ms");
        assertTrue(r.renew(o, Long.MAX_VALUE));
        assertTrue(raw.pttl(key) > 86_400_000L, "after a renewal the key expires in " + raw.pttl(key) + " ms");
    }

    /**
     * A lookup of a prompt's prefix judges no offer past its first key not served: that offer's owner would cost a
     * liveness read (a round trip) for an answer the lookup drops. lookupEach judges every key.
     */
    @Test
    void aPrefixLookupJudgesNothingPastItsEnd() {
        RedisRegistry r = registry(Duration.ofSeconds(2), () -> NOW);
        RedisCommands<String, byte[]> raw = raw();
        Offer a = offer(4000, 1);
        Offer b = offer(4001, 1);
        Offer other = new Offer(RegistryContractTest.key(4003), 7, new ProcessIdentity(4_000_003, 9),
                List.of(RegistryContractTest.ipc(1, 3)), 0, 4096, 42, 1, NOW + 3_600_000);
        for (Offer o : List.of(a, b, other)) {
            assertEquals(PublishOutcome.PUBLISHED, r.publish(o));
        }
        List<io.kvmarket.key.ChunkKey> keys = List.of(a.key(), b.key(), RegistryContractTest.key(4002), other.key());
        raw.configResetstat();
        assertEquals(List.of(a, b), r.lookupPrefix(keys.toArray(io.kvmarket.key.ChunkKey[]::new), 4));
        assertEquals(0, calls(raw, "exists"), "the owner of an offer past the prefix was asked about");
        assertArrayEquals(new Offer[] {a, b, null, null}, r.lookupEach(keys), "a dead owner's offer is not served");
        assertEquals(1, calls(raw, "exists"));
    }

    /**
     * A header another writer damaged (a pin count that is not an integer, say) leaves no chunk stuck: the record is
     * foreign to every step and every read, its owner finds it gone, and the next publication replaces it. The
     * scripts and {@link OfferCodec#header} must judge each header alike, or a publication would meet a record it
     * cannot replace.
     */
    @Test
    void aDamagedHeaderIsForeignToEveryStepAndReplaced() {
        RedisRegistry r = registry(Duration.ofSeconds(2), () -> NOW);
        RedisCommands<String, byte[]> raw = raw();
        String[][] damage = {{"garbage"}, {"1.5"}, {"-3"}, {"1e400"}, {"0999999999999999"}, {"1000000000000000"},
                {null, "99999999999999999999999"}, {null, "9223372036854775808"}, {null, "-9223372036854775809"},
                {null, "zz"}, {null, null, "00000000000000000007"}, {null, null, "-"}, {"-0"}, {null, null, ""},
                {null, null, "+5"}, {null, null, "0,0"}, {null, null, "1x"}};
        for (int i = 0; i < damage.length; i++) {
            Offer o = offer(1000 + i, 1);
            String key = OfferCodec.hashKey(prefix, o.key());
            String what = Arrays.toString(damage[i]);
            assertEquals(PublishOutcome.PUBLISHED, r.publish(o));
            setHeader(raw, key, damage[i]);
            assertEquals(null, OfferCodec.header(raw.get(key)), what);
            assertArrayEquals(new boolean[] {false}, r.pinAll(List.of(o), 10_000), what);
            assertFalse(r.pin(o, 10_000), what);
            assertArrayEquals(new Offer[] {null}, r.lookupEach(List.of(o.key())), what);
            assertEquals(Withdrawal.WITHDRAWN, r.withdrawIfUnused(o, NOW), what);
            assertEquals(1, raw.exists(key), "a withdrawal leaves what is not its own: " + what);
            assertEquals(PublishOutcome.PUBLISHED, r.publish(o), what);
            assertTrue(r.pin(o, 10_000), what);
            r.unpin(o);
            assertEquals(Withdrawal.WITHDRAWN, r.withdrawIfUnused(List.of(o), new long[] {NOW})[0], what);
            assertEquals(0, raw.exists(key), what);
        }
        // The extremes of a well-formed header are a record: pinned through Long.MIN_VALUE and Long.MAX_VALUE times.
        Offer o = offer(2000, 1);
        String key = OfferCodec.hashKey(prefix, o.key());
        assertEquals(PublishOutcome.PUBLISHED, r.publish(o));
        setHeader(raw, key, "999999999999998", Long.toString(Long.MIN_VALUE), Long.toString(Long.MAX_VALUE));
        assertTrue(r.pin(o, 10_000));
        assertFalse(r.pin(o, 10_000), "a pin count at its greatest is not raised further");
        OfferCodec.Header h = OfferCodec.header(raw.get(key));
        assertEquals(OfferCodec.MAX_PINS, h.pins());
        assertEquals(NOW + 10_000, h.pinExpiryMs());
        assertEquals(Long.MAX_VALUE, h.lastPinnedMs());
        assertEquals(Withdrawal.PINNED, r.withdrawIfUnused(o, NOW));
        setHeader(raw, key, "0");
        assertEquals(Withdrawal.IMPORTED_SINCE, r.withdrawIfUnused(o, NOW));
    }

    /**
     * Randomized: headers well formed and not (leading zeros, signs, one past the range of a long, too many digits,
     * pins out of range, fields missing or extra), each under a record of a current offer: the scripts count it
     * current exactly when {@link OfferCodec#header} reads it, then read the numbers {@link Long#parseLong} reads,
     * and a withdrawal decides on them as a model of its rule does (leading zeros included: the scripts compare
     * numbers as text).
     */
    @Test
    void theScriptsAndTheCodecJudgeEveryHeaderAlike() {
        RedisRegistry r = registry(Duration.ofSeconds(2), () -> NOW);
        RedisCommands<String, byte[]> raw = raw();
        Random rnd = new Random(11);
        String[] odd = {"", "-", "-0", "00", "01", "+1", " 1", "1 ", "1e3", "0x1", "--1", "1-", "9223372036854775808",
                "-9223372036854775809", "99999999999999999999", "18446744073709551616", "1.0", "١", "NaN",
                "0009223372036854775807", "0922337203685477580", "-0922337203685477580", "000000000000001",
                "0000000000000001"};
        List<Offer> offers = new ArrayList<>();
        List<String> headers = new ArrayList<>();
        for (int i = 0; i < 1500; i++) {
            Offer o = offer(3000 + i, 1);
            assertEquals(PublishOutcome.PUBLISHED, r.publish(o));
            List<String> fields = new ArrayList<>();
            int count = rnd.nextInt(20) == 0 ? 3 + 2 * rnd.nextInt(2) : 4;
            for (int f = 0; f < count; f++) {
                fields.add(switch (rnd.nextInt(9)) {
                    case 0 -> odd[rnd.nextInt(odd.length)];
                    case 7 -> { // zeros before a number, as another writer might pad it
                        long v = rnd.nextBoolean() ? rnd.nextInt(100) : NOW + rnd.nextInt(21) - 10;
                        String digits = String.format("%0" + (2 + rnd.nextInt(17)) + "d", v);
                        yield rnd.nextInt(4) == 0 ? "-" + digits : digits;
                    }
                    case 1 -> Long.toString(Long.MIN_VALUE + rnd.nextInt(3));
                    case 2 -> Long.toString(Long.MAX_VALUE - rnd.nextInt(3));
                    case 3 -> Long.toString(OfferCodec.MAX_PINS + rnd.nextInt(3) - 1);
                    case 4 -> Long.toString(rnd.nextLong());
                    default -> Long.toString(rnd.nextInt(2001) - 1000);
                });
            }
            String header = String.join(",", fields);
            String key = OfferCodec.hashKey(prefix, o.key());
            byte[] record = raw.get(key);
            byte[] h = (header + ";").getBytes(StandardCharsets.UTF_8);
            int idAt = OfferCodec.header(record).identityAt();
            byte[] changed = Arrays.copyOf(h, h.length + record.length - idAt);
            System.arraycopy(record, idAt, changed, h.length, record.length - idAt);
            raw.set(key, changed, SetArgs.Builder.keepttl());
            offers.add(o);
            headers.add(header);
        }
        boolean[] current = r.areCurrent(offers);
        int read = 0;
        for (int i = 0; i < offers.size(); i++) {
            byte[] record = raw.get(OfferCodec.hashKey(prefix, offers.get(i).key()));
            OfferCodec.Header h = OfferCodec.header(record);
            assertEquals(current[i], h != null, "header " + headers.get(i));
            if (h != null) {
                read++;
                String[] f = headers.get(i).split(",");
                assertArrayEquals(Arrays.stream(f).mapToLong(Long::parseLong).toArray(),
                        new long[] {h.leaseExpiryMs(), h.pins(), h.pinExpiryMs(), h.lastPinnedMs()}, headers.get(i));
            }
        }
        assertTrue(read > 100 && read < offers.size() - 100, "both kinds drawn: " + read + " read");

        long[] since = new long[offers.size()];
        Withdrawal[] expected = new Withdrawal[offers.size()];
        for (int i = 0; i < since.length; i++) {
            OfferCodec.Header h = OfferCodec.header(raw.get(OfferCodec.hashKey(prefix, offers.get(i).key())));
            since[i] = switch (rnd.nextInt(4)) {
                case 0 -> NOW + rnd.nextInt(21) - 10;
                case 1 -> h == null ? 0 : h.lastPinnedMs() + rnd.nextInt(3) - 1;
                case 2 -> rnd.nextInt(100) - 50;
                default -> rnd.nextLong();
            };
            expected[i] = h == null ? Withdrawal.WITHDRAWN // not ours: gone, as far as the owner can tell
                    : h.pins() > 0 && h.pinExpiryMs() > NOW ? Withdrawal.PINNED
                    : h.lastPinnedMs() > since[i] ? Withdrawal.IMPORTED_SINCE : Withdrawal.WITHDRAWN;
        }
        Withdrawal[] decided = r.withdrawIfUnused(offers, since);
        for (int i = 0; i < since.length; i++) {
            assertEquals(expected[i], decided[i], "header " + headers.get(i) + ", used since " + since[i]);
        }
    }

    /**
     * Randomized: the same states under two prefixes, one driven by the batched calls, the other by one call per
     * chunk in the same order; every answer and every hash afterwards must be the same.
     */
    @Test
    void aBatchAnswersEveryChunkAsCallsOfItsOwnWould() {
        RedisCommands<String, byte[]> raw = raw();
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
                        case 1 -> raw.rpush(hash, "foreign".getBytes(StandardCharsets.US_ASCII));
                        case 2 -> (p.equals(prefixA) ? batched : single).publish(offer(i, 9)); // another offer
                        default -> (p.equals(prefixA) ? batched : single).publish(o);
                    }
                }
                if (state >= 3) {
                    String[] fields = new String[3];
                    Arrays.setAll(fields, f -> values[rnd.nextInt(values.length)]);
                    setHeader(raw, OfferCodec.hashKey(prefixA, o.key()), fields);
                    setHeader(raw, OfferCodec.hashKey(prefixB, o.key()), fields);
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
                if (raw.type(a).equals("string")) {
                    assertArrayEquals(raw.get(b), raw.get(a), "record of " + o.key() + ", seed " + seed);
                }
            }
        }
    }

    private RedisRegistry track(RedisRegistry r) {
        toClose.add(r);
        return r;
    }
}
