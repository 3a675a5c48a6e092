package io.kvmarket.redis;

import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.RegistryException;
import io.kvmarket.testkit.RedisCluster;
import io.kvmarket.testkit.RedisServer;
import io.kvmarket.testkit.RegistryContractTest;
import io.lettuce.core.RedisClient;
import io.lettuce.core.api.StatefulRedisConnection;
import io.lettuce.core.cluster.RedisClusterClient;
import io.lettuce.core.cluster.api.StatefulRedisClusterConnection;
import io.lettuce.core.cluster.api.sync.RedisAdvancedClusterCommands;
import io.lettuce.core.codec.ByteArrayCodec;
import io.lettuce.core.codec.RedisCodec;
import io.lettuce.core.codec.StringCodec;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * Foreign and damaged content under offer keys on a 3-master cluster: every Redis type, garbage hashes, copied
 * identities, huge values, expired leases, dead owners, duplicates, thousands of keys; answers compared exactly
 * with a model, and the per-node path compared with the key-by-key path.
 */
@Timeout(300)
class ClusterLookupAbuseTest {

    @TempDir
    static Path dir;
    static RedisCluster cluster;
    static RedisClusterClient rawClient;
    static StatefulRedisClusterConnection<String, byte[]> rawConn;
    static RedisAdvancedClusterCommands<String, byte[]> raw;
    static final AtomicInteger PREFIXES = new AtomicInteger();
    static final long NOW = 1_000_000;

    @BeforeAll
    static void start() {
        assumeTrue(RedisCluster.installed(), "no redis here");
        cluster = RedisCluster.start(dir, 3);
        rawClient = RedisClusterClient.create("redis://" + cluster.uri().substring("redis-cluster://".length()));
        rawConn = rawClient.connect(RedisCodec.of(StringCodec.UTF8, ByteArrayCodec.INSTANCE));
        raw = rawConn.sync();
    }

    @AfterAll
    static void stop() {
        if (rawConn != null) {
            rawConn.close();
            rawClient.shutdown();
        }
        if (cluster != null) {
            cluster.close();
        }
    }

    static RedisRegistry registry(String prefix) {
        return new RedisRegistry(cluster.uri(), prefix, Duration.ofSeconds(2), () -> NOW);
    }

    static byte[] b(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    /** A record of {@code header} (without its ';') and {@code identity}, as another writer may have left it. */
    static byte[] record(String header, byte[] identity) {
        byte[] h = b(header + ";");
        byte[] r = Arrays.copyOf(h, h.length + identity.length);
        System.arraycopy(identity, 0, r, h.length, identity.length);
        return r;
    }

    /** Turns the per-node reads on or off, to compare them with reading key by key. */
    static void setNodeScripts(RedisRegistry r, boolean on) {
        r.nodeScripts = on;
    }

    static boolean nodeScripts(RedisRegistry r) {
        return r.nodeScripts;
    }

    /** Writes state {@code s} for key i, returns the offer a lookup must answer (or null). */
    static Offer plant(String prefix, ChunkKey key, int s, Random rnd, ProcessIdentity alive, ProcessIdentity dead,
                       ChunkKey other) {
        String hk = OfferCodec.hashKey(prefix, key);
        long gen = 1 + rnd.nextInt(1000);
        switch (s) {
            case 0: // absent
                return null;
            case 1: { // live offer of a live (other) owner
                Offer o = RegistryContractTest.offer(key, alive, gen, NOW + 50_000 + rnd.nextInt(1000));
                raw.set(hk, OfferCodec.record(o));
                return o;
            }
            case 2: { // expired lease
                Offer o = RegistryContractTest.offer(key, alive, gen, NOW - rnd.nextInt(1000));
                raw.set(hk, OfferCodec.record(o));
                return null;
            }
            case 3: { // dead owner
                Offer o = RegistryContractTest.offer(key, dead, gen, NOW + 50_000);
                raw.set(hk, OfferCodec.record(o));
                return null;
            }
            case 4:
                raw.set(hk, b("not an offer"));
                return null;
            case 5:
                raw.rpush(hk, b("a"), b("b"));
                return null;
            case 6:
                raw.hset(hk, Map.of("x", b("garbage"), "y", b("more")));
                return null;
            case 7:
                raw.set(hk, record("123,0,0,0", b("garbage identity")));
                return null;
            case 8: { // identity without header
                Offer o = RegistryContractTest.offer(key, alive, gen, NOW + 50_000);
                raw.set(hk, OfferCodec.identity(o));
                return null;
            }
            case 9: { // another key's live offer copied under this key
                Offer o = RegistryContractTest.offer(other, alive, gen, NOW + 50_000);
                raw.set(hk, OfferCodec.record(o));
                return null;
            }
            case 10:
                raw.set(hk, record(NOW + 50_000 + ",0,0,0", b("!")));
                return null;
            case 11: {
                byte[] huge = new byte[1 << 20];
                rnd.nextBytes(huge);
                huge[0] = 1; // looks like version 1
                raw.set(hk, record("99999999999,0,0,0", huge));
                return null;
            }
            case 12:
                raw.sadd(hk, b("m"));
                return null;
            case 13:
                raw.zadd(hk, 1.0, b("m"));
                return null;
            case 14: { // live offer, lease not a number
                Offer o = RegistryContractTest.offer(key, alive, gen, NOW + 50_000);
                raw.set(hk, record("soon,0,0,0", OfferCodec.identity(o)));
                return null;
            }
            case 15: { // a valid header but damaged endpoints length
                Offer o = RegistryContractTest.offer(key, alive, gen, NOW + 50_000);
                byte[] id = OfferCodec.identity(o);
                byte[] longer = Arrays.copyOf(id, id.length + 3);
                raw.set(hk, record(o.leaseExpiryMs() + ",0,0,0", longer));
                return null;
            }
            case 16: { // an empty identity
                raw.set(hk, record("99999999999,0,0,0", new byte[0]));
                return null;
            }
            case 17: // a stream
                raw.xadd(hk, Map.of("f", b("v")));
                return null;
            case 18: { // live offer, pinned
                Offer o = RegistryContractTest.offer(key, alive, gen, NOW + 50_000 + rnd.nextInt(1000));
                raw.set(hk, record(o.leaseExpiryMs() + ",3," + (NOW + 9_000) + "," + NOW, OfferCodec.identity(o)));
                return o;
            }
            case 19: { // live offer, a damaged header: pins negative, 20 digits, one past Long.MAX_VALUE, a field
                // missing, a header without its end
                Offer o = RegistryContractTest.offer(key, alive, gen, NOW + 50_000);
                String[] damaged = {o.leaseExpiryMs() + ",-1,0,0", "%020d,0,0,0".formatted(o.leaseExpiryMs()),
                        o.leaseExpiryMs() + ",0,9223372036854775808,0", o.leaseExpiryMs() + ",0,0",
                        o.leaseExpiryMs() + ",0,0,0" + ",0".repeat(40)};
                raw.set(hk, record(damaged[rnd.nextInt(damaged.length)], OfferCodec.identity(o)));
                return null;
            }
            default: { // live offer, again (weight)
                Offer o = RegistryContractTest.offer(key, alive, gen, NOW + 50_000 + rnd.nextInt(1000));
                raw.set(hk, OfferCodec.record(o));
                return o;
            }
        }
    }

    static ChunkKey rkey(Random rnd) {
        return new ChunkKey(rnd.nextLong(), rnd.nextLong());
    }

    /** Randomized, seeded: exact answers for every position, per-node path and key-by-key path agree. */
    @Test
    void randomizedContentAnswersExactly() throws Exception {
        for (long seed : new long[] {1, 2, 3, 42}) {
            Random rnd = new Random(seed);
            String prefix = "abuse" + PREFIXES.incrementAndGet();
            ProcessIdentity alive = new ProcessIdentity(900_000 + seed, 77);
            ProcessIdentity dead = new ProcessIdentity(800_000 + seed, 66);
            raw.psetex(OfferCodec.ownerKey(prefix, 7, alive), 600_000, new byte[] {1});
            int n = 300 + rnd.nextInt(900);
            ChunkKey[] keys = new ChunkKey[n];
            Offer[] expect = new Offer[n];
            for (int i = 0; i < n; i++) {
                keys[i] = rkey(rnd);
            }
            for (int i = 0; i < n; i++) {
                int s = rnd.nextInt(26);
                if (s == 11 && rnd.nextInt(8) != 0) {
                    s = 1; // fewer huge values: the machine is small
                }
                expect[i] = plant(prefix, keys[i], s, rnd, alive, dead, keys[(i + 1) % n]);
            }
            try (RedisRegistry r = registry(prefix)) {
                for (int round = 0; round < 6; round++) {
                    int m = round == 0 ? 0 : round == 1 ? 1 : 1 + rnd.nextInt(2500);
                    List<ChunkKey> ask = new ArrayList<>();
                    List<Offer> want = new ArrayList<>();
                    for (int j = 0; j < m; j++) {
                        int i = rnd.nextInt(n);
                        ask.add(keys[i]);
                        want.add(expect[i]);
                        if (rnd.nextInt(5) == 0) { // a duplicate right after
                            ask.add(keys[i]);
                            want.add(expect[i]);
                        }
                    }
                    Offer[] got = r.lookupEach(ask);
                    assertArrayEquals(want.toArray(new Offer[0]), got, "seed " + seed + " round " + round);
                    assertTrue(nodeScripts(r), "the per-node path still on");
                    List<Offer> prefixWant = new ArrayList<>();
                    for (Offer o : want) {
                        if (o == null) {
                            break;
                        }
                        prefixWant.add(o);
                    }
                    int max = ask.isEmpty() ? 0 : 1 + rnd.nextInt(ask.size());
                    assertEquals(prefixWant.subList(0, Math.min(max, prefixWant.size())),
                            r.lookupPrefix(ask.toArray(new ChunkKey[0]), max), "prefix seed " + seed);
                    setNodeScripts(r, false);
                    assertArrayEquals(got, r.lookupEach(ask), "key-by-key agrees, seed " + seed);
                    setNodeScripts(r, true);
                }
                // The prefix built of live offers only, then cut.
                List<ChunkKey> liveKeys = new ArrayList<>();
                List<Offer> liveOffers = new ArrayList<>();
                for (int i = 0; i < n; i++) {
                    if (expect[i] != null) {
                        liveKeys.add(keys[i]);
                        liveOffers.add(expect[i]);
                    }
                }
                int cut = liveKeys.size() / 2;
                List<ChunkKey> ask = new ArrayList<>(liveKeys);
                ask.add(cut, rkey(rnd)); // a key nobody offered
                assertEquals(liveOffers.subList(0, cut), r.lookupPrefix(ask.toArray(new ChunkKey[0]), ask.size()));
                assertEquals(liveOffers, r.lookupPrefix(liveKeys.toArray(new ChunkKey[0]), liveKeys.size()));
                assertEquals(liveOffers.subList(0, 3), r.lookupPrefix(liveKeys.toArray(new ChunkKey[0]), 3));
            }
        }
    }

    /** Two registries in one JVM, same chunks under two prefixes: each sees its own offers only. */
    @Test
    void registriesOfTwoPrefixesNeverSeeEachOther() {
        String pa = "abuseA" + PREFIXES.incrementAndGet();
        String pb = "abuseB" + PREFIXES.incrementAndGet();
        ProcessIdentity alive = new ProcessIdentity(700_001, 5);
        raw.psetex(OfferCodec.ownerKey(pa, 7, alive), 600_000, new byte[] {1});
        raw.psetex(OfferCodec.ownerKey(pb, 7, alive), 600_000, new byte[] {1});
        ChunkKey[] keys = RegistryContractTest.keys(200);
        Offer[] a = new Offer[keys.length];
        Offer[] bb = new Offer[keys.length];
        for (int i = 0; i < keys.length; i++) {
            a[i] = RegistryContractTest.offer(keys[i], alive, 1 + i, NOW + 10_000);
            bb[i] = RegistryContractTest.offer(keys[i], alive, 5000 + i, NOW + 10_000);
            raw.set(OfferCodec.hashKey(pa, keys[i]), OfferCodec.record(a[i]));
            if (i % 3 != 0) {
                raw.set(OfferCodec.hashKey(pb, keys[i]), OfferCodec.record(bb[i]));
            } else {
                bb[i] = null;
            }
        }
        try (RedisRegistry ra = registry(pa); RedisRegistry rb = registry(pb)) {
            for (int k = 0; k < 5; k++) {
                assertArrayEquals(a, ra.lookupEach(Arrays.asList(keys)));
                assertArrayEquals(bb, rb.lookupEach(Arrays.asList(keys)));
            }
        }
    }

    /** SCRIPT FLUSH on every node, over and over, while four threads look up: answers stay exact. */
    @Test
    void scriptFlushesDuringLookupsKeepAnswersExact() throws Exception {
        String prefix = "abuseF" + PREFIXES.incrementAndGet();
        ProcessIdentity alive = new ProcessIdentity(700_002, 5);
        raw.psetex(OfferCodec.ownerKey(prefix, 7, alive), 600_000, new byte[] {1});
        Random rnd = new Random(7);
        ChunkKey[] keys = new ChunkKey[600];
        Offer[] expect = new Offer[keys.length];
        for (int i = 0; i < keys.length; i++) {
            keys[i] = rkey(rnd);
            expect[i] = plant(prefix, keys[i], rnd.nextInt(3) == 0 ? 0 : rnd.nextInt(2) == 0 ? 4 : 1, rnd, alive,
                    alive, keys[0]);
        }
        List<RedisClient> clients = new ArrayList<>();
        List<StatefulRedisConnection<String, String>> nodes = new ArrayList<>();
        for (RedisServer s : cluster.nodes()) {
            RedisClient c = RedisClient.create(s.uri());
            clients.add(c);
            nodes.add(c.connect());
        }
        ConcurrentLinkedQueue<Throwable> bad = new ConcurrentLinkedQueue<>();
        AtomicBoolean stop = new AtomicBoolean();
        AtomicLong lookups = new AtomicLong();
        try (RedisRegistry r = registry(prefix)) {
            List<Thread> threads = new ArrayList<>();
            for (int t = 0; t < 3; t++) {
                long seed = 100 + t;
                threads.add(new Thread(() -> {
                    Random tr = new Random(seed);
                    while (!stop.get()) {
                        int from = tr.nextInt(keys.length);
                        int to = Math.min(keys.length, from + 1 + tr.nextInt(keys.length));
                        try {
                            Offer[] got = r.lookupEach(Arrays.asList(keys).subList(from, to));
                            if (!Arrays.equals(Arrays.copyOfRange(expect, from, to), got)) {
                                bad.add(new AssertionError("wrong answer for " + from + ".." + to));
                            }
                            lookups.incrementAndGet();
                        } catch (Throwable e) {
                            bad.add(e);
                        }
                    }
                }));
            }
            threads.forEach(Thread::start);
            long end = System.nanoTime() + 4_000_000_000L;
            while (System.nanoTime() < end) {
                for (StatefulRedisConnection<String, String> c : nodes) {
                    c.sync().scriptFlush();
                }
                Thread.sleep(5);
            }
            stop.set(true);
            for (Thread t : threads) {
                t.join();
            }
            assertTrue(nodeScripts(r));
        } finally {
            nodes.forEach(StatefulRedisConnection::close);
            clients.forEach(RedisClient::shutdown);
        }
        assertTrue(bad.isEmpty(), () -> bad.size() + " failures, first: " + bad.peek());
        assertTrue(lookups.get() > 10, "lookups ran: " + lookups.get());
    }

    /** close() while lookups run: only RegistryException (or answers), and no thread left behind. */
    @Test
    void closeWhileLookingUpFailsOnlyAsTheRegistry() throws Exception {
        String prefix = "abuseC" + PREFIXES.incrementAndGet();
        ProcessIdentity alive = new ProcessIdentity(700_003, 5);
        raw.psetex(OfferCodec.ownerKey(prefix, 7, alive), 600_000, new byte[] {1});
        Random rnd = new Random(11);
        ChunkKey[] keys = new ChunkKey[1200];
        Offer[] expect = new Offer[keys.length];
        for (int i = 0; i < keys.length; i++) {
            keys[i] = rkey(rnd);
            expect[i] = plant(prefix, keys[i], rnd.nextInt(2) == 0 ? 0 : 1, rnd, alive, alive, keys[0]);
        }
        Thread.sleep(300);
        int threadsBefore = liveThreads();
        for (int round = 0; round < 3; round++) {
            RedisRegistry r = registry(prefix);
            assertArrayEquals(expect, r.lookupEach(Arrays.asList(keys)));
            ConcurrentLinkedQueue<Throwable> bad = new ConcurrentLinkedQueue<>();
            AtomicBoolean stop = new AtomicBoolean();
            List<Thread> threads = new ArrayList<>();
            for (int t = 0; t < 2; t++) {
                threads.add(new Thread(() -> {
                    while (!stop.get()) {
                        try {
                            Offer[] got = r.lookupEach(Arrays.asList(keys));
                            if (!Arrays.equals(expect, got)) {
                                // fewer offers are allowed, a different one never
                                for (int i = 0; i < got.length; i++) {
                                    if (got[i] != null && !got[i].equals(expect[i])) {
                                        bad.add(new AssertionError("wrong offer at " + i));
                                    }
                                }
                            }
                        } catch (RegistryException expected) {
                            // fine
                        } catch (Throwable e) {
                            bad.add(e);
                        }
                    }
                }));
            }
            threads.forEach(Thread::start);
            Thread.sleep(150 + 100 * round);
            r.close();
            Thread.sleep(200);
            stop.set(true);
            for (Thread t : threads) {
                t.join(10_000);
                assertTrue(!t.isAlive(), "a lookup hangs after close");
            }
            assertTrue(bad.isEmpty(), () -> bad.size() + " failures, first: " + bad.peek());
        }
        Thread.sleep(1500);
        int after = liveThreads();
        assertTrue(after <= threadsBefore + 2, "threads before " + threadsBefore + " after " + after + ": "
                + Thread.getAllStackTraces().keySet().stream().map(Thread::getName).sorted().toList());
    }

    static int liveThreads() {
        return (int) Thread.getAllStackTraces().keySet().stream().filter(Thread::isAlive)
                .filter(t -> !t.getName().startsWith("ForkJoinPool")).count();
    }

    /** An empty list and lookups of nothing offered at all. */
    @Test
    void emptyAndUnknown() {
        try (RedisRegistry r = registry("abuseE" + PREFIXES.incrementAndGet())) {
            assertEquals(0, r.lookupEach(Collections.emptyList()).length);
            assertEquals(List.of(), r.lookupPrefix(new ChunkKey[0], 10));
            assertEquals(List.of(), r.lookupPrefix(RegistryContractTest.keys(10), 0));
            assertNull(r.lookup(RegistryContractTest.key(3)));
            Offer[] none = r.lookupEach(Arrays.asList(RegistryContractTest.keys(3000)));
            assertEquals(3000, none.length);
            assertTrue(Arrays.stream(none).allMatch(o -> o == null));
        }
    }
}
