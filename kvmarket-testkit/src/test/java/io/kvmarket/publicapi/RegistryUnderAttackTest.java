package io.kvmarket.publicapi;

import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.NodeId;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.InProcessRegistry;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.registry.PublishOutcome;
import io.kvmarket.registry.Withdrawal;
import io.kvmarket.registry.shm.NodeLocalRegistry;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Publication identity with endpoint lists, the endpoint-list cache, and lookups racing writers on the v4 table. */
@Timeout(120)
class RegistryUnderAttackTest {

    @TempDir
    Path dir;

    static Endpoint ep(int kind, int len, int fill) {
        byte[] b = new byte[len];
        for (int i = 0; i < len; i++) {
            b[i] = (byte) (fill * 13 + i);
        }
        return new Endpoint(kind, b);
    }

    static Offer offer(ChunkKey key, List<Endpoint> eps, long gen) {
        return new Offer(key, 7, ProcessIdentity.current(), eps, 4096, 4096, 42, gen, System.currentTimeMillis() + 600_000);
    }

    private void endpointsAreIdentity(OfferRegistry r) {
        ChunkKey k = new ChunkKey(1, 2);
        Endpoint ipc = ep(1, 44, 1);
        Endpoint tcp = ep(2, 20, 2);
        Offer a = offer(k, List.of(ipc, tcp), 5);
        Offer reordered = new Offer(k, a.nodeId(), a.owner(), List.of(tcp, ipc), a.offset(), a.length(),
                a.layoutFingerprint(), a.generation(), a.leaseExpiryMs());
        Offer extra = new Offer(k, a.nodeId(), a.owner(), List.of(ipc, tcp, ep(3, 8, 3)), a.offset(), a.length(),
                a.layoutFingerprint(), a.generation(), a.leaseExpiryMs());
        Offer fewer = new Offer(k, a.nodeId(), a.owner(), List.of(ipc), a.offset(), a.length(),
                a.layoutFingerprint(), a.generation(), a.leaseExpiryMs());
        assertEquals(PublishOutcome.PUBLISHED, r.publish(a));
        for (Offer other : List.of(reordered, extra, fewer)) {
            String ctx = r.getClass().getSimpleName() + " " + other.endpoints();
            assertFalse(r.isCurrent(other), ctx);
            assertFalse(r.pin(other, 10_000), ctx);
            r.unpin(other);
            assertFalse(r.renew(other, System.currentTimeMillis() + 1), ctx);
            assertEquals(Withdrawal.WITHDRAWN, r.withdrawIfUnused(other, Long.MAX_VALUE), ctx);
            r.withdraw(other);
            assertTrue(r.isCurrent(a), ctx + " removed the real publication");
            assertEquals(a, r.lookup(k), ctx);
        }
        assertTrue(r.pin(a, 10_000));
        r.unpin(reordered);
        r.unpin(fewer);
        assertEquals(Withdrawal.PINNED, r.withdrawIfUnused(a, Long.MAX_VALUE), "another publication's unpin dropped a pin");
    }

    @Test
    void endpointsDifferingInOrderOrCountAreOtherPublications() {
        try (NodeLocalRegistry r = NodeLocalRegistry.open(dir, 64)) {
            endpointsAreIdentity(r);
        }
        try (InProcessRegistry r = new InProcessRegistry()) {
            endpointsAreIdentity(r);
        }
    }

    /** Consecutive slots whose encodings are prefixes of one another, or equal but for one byte. */
    @Test
    void aPrefixLookupNeverReturnsAnotherSlotsEndpoints() {
        try (NodeLocalRegistry r = NodeLocalRegistry.open(dir, 256)) {
            Random rnd = new Random(5);
            Endpoint base = ep(1, 44, 1);
            byte[] flipped = base.bytes();
            flipped[43] ^= 1;
            List<List<Endpoint>> shapes = List.of(List.of(base), List.of(base, ep(2, 1, 0)), List.of(base, ep(2, 2, 0)),
                    List.of(new Endpoint(1, flipped)), List.of(ep(2, 1, 0), base), List.of(ep(1, 43, 1)));
            for (int round = 0; round < 30; round++) {
                int n = 64;
                ChunkKey[] keys = new ChunkKey[n];
                Offer[] offers = new Offer[n];
                for (int i = 0; i < n; i++) {
                    keys[i] = new ChunkKey(round, i + 1000L * round);
                    offers[i] = offer(keys[i], shapes.get(rnd.nextInt(shapes.size())), round * 1000L + i);
                    assertEquals(PublishOutcome.PUBLISHED, r.publish(offers[i]));
                }
                List<Offer> found = r.lookupPrefix(keys, n);
                assertEquals(n, found.size());
                for (int i = 0; i < n; i++) {
                    assertEquals(offers[i].endpoints(), found.get(i).endpoints(), "chunk " + i + " round " + round);
                    assertEquals(offers[i], found.get(i));
                    assertEquals(offers[i], r.lookup(keys[i]));
                }
                for (Offer o : offers) {
                    r.withdraw(o);
                }
            }
        }
    }

    /**
     * Property-style: writers publish, withdraw and pin random publications (random endpoint lists) while readers
     * look up; every offer a lookup returns must be exactly one that was published for that key.
     */
    @Test
    void lookupsRacingWritersReturnOnlyExactPublications() throws Exception {
        for (int seed = 1; seed <= 3; seed++) {
            racingRound(seed, dir.resolve("s" + seed));
        }
    }

    private void racingRound(int seed, Path d) throws Exception {
        // Two openings of one file, as two processes would have.
        NodeLocalRegistry r1 = NodeLocalRegistry.open(d, 256);
        NodeLocalRegistry r2 = NodeLocalRegistry.open(d, 256);
        OfferRegistry[] regs = {r1, r2};
        int keyCount = 150;
        ChunkKey[] keys = new ChunkKey[keyCount];
        for (int i = 0; i < keyCount; i++) {
            keys[i] = new ChunkKey(seed * 31L + i, (i % 7) * 256 + (i % 3)); // heavy collisions
        }
        Map<ChunkKey, Set<Offer>> ever = new ConcurrentHashMap<>();
        ConcurrentLinkedQueue<Offer> live = new ConcurrentLinkedQueue<>();
        AtomicLong gens = new AtomicLong();
        AtomicBoolean stop = new AtomicBoolean();
        List<Throwable> errors = new CopyOnWriteArrayList<>();
        List<Thread> threads = new ArrayList<>();
        AtomicLong lookups = new AtomicLong();
        AtomicLong hits = new AtomicLong();
        for (int w = 0; w < 3; w++) {
            Random rnd = new Random(seed * 100 + w);
            OfferRegistry reg = regs[w % 2];
            threads.add(new Thread(() -> {
                try {
                    while (!stop.get()) {
                        int op = rnd.nextInt(10);
                        if (op < 4) {
                            ChunkKey k = keys[rnd.nextInt(keyCount)];
                            List<Endpoint> eps = new ArrayList<>();
                            int[] kinds = {1, 2, 3, 200};
                            int count = 1 + rnd.nextInt(3);
                            int first = rnd.nextInt(4);
                            for (int j = 0; j < count; j++) {
                                eps.add(ep(kinds[(first + j) % 4], 1 + rnd.nextInt(90), rnd.nextInt(5)));
                            }
                            long g = gens.incrementAndGet();
                            Offer o = new Offer(k, 7, ProcessIdentity.current(), eps, 64L * rnd.nextInt(4), 64 + g % 3,
                                    g, g, Long.MAX_VALUE);
                            ever.computeIfAbsent(k, x -> ConcurrentHashMap.newKeySet()).add(o);
                            if (reg.publish(o) == PublishOutcome.PUBLISHED) {
                                live.add(o);
                            }
                        } else if (op < 7) {
                            Offer o = live.poll();
                            if (o != null) {
                                if (rnd.nextBoolean()) {
                                    reg.withdraw(o);
                                } else if (reg.withdrawIfUnused(o, Long.MAX_VALUE) != Withdrawal.WITHDRAWN) {
                                    live.add(o);
                                }
                            }
                        } else {
                            Offer o = live.peek();
                            if (o != null && reg.pin(o, 1 + rnd.nextInt(5))) {
                                reg.unpin(o);
                            }
                        }
                    }
                } catch (Throwable t) {
                    errors.add(t);
                }
            }, "writer-" + w));
        }
        for (int rd = 0; rd < 3; rd++) {
            Random rnd = new Random(seed * 1000 + rd);
            OfferRegistry reg = regs[rd % 2];
            threads.add(new Thread(() -> {
                try {
                    while (!stop.get()) {
                        int start = rnd.nextInt(keyCount - 8);
                        ChunkKey[] ks = java.util.Arrays.copyOfRange(keys, start, start + 8);
                        List<Offer> found = rnd.nextBoolean() ? reg.lookupPrefix(ks, 8)
                                : java.util.Collections.singletonList(reg.lookup(ks[0]));
                        for (int i = 0; i < found.size(); i++) {
                            Offer o = found.get(i);
                            lookups.incrementAndGet();
                            if (o == null) {
                                continue;
                            }
                            hits.incrementAndGet();
                            if (!o.key().equals(ks[i])) {
                                throw new AssertionError("lookup of " + ks[i] + " returned " + o);
                            }
                            Set<Offer> pub = ever.getOrDefault(o.key(), Set.of());
                            if (!pub.contains(o)) {
                                throw new AssertionError("lookup returned an offer never published: " + o + " "
                                        + o.endpoints() + " gen " + o.generation());
                            }
                            for (Offer p : pub) {
                                if (p.generation() == o.generation() && !p.endpoints().equals(o.endpoints())) {
                                    throw new AssertionError("endpoints of another publication: " + o);
                                }
                            }
                        }
                    }
                } catch (Throwable t) {
                    errors.add(t);
                }
            }, "reader-" + rd));
        }
        threads.forEach(Thread::start);
        Thread.sleep(3000);
        stop.set(true);
        for (Thread t : threads) {
            t.join(20_000);
            assertFalse(t.isAlive(), t.getName() + " stuck");
        }
        try {
            if (!errors.isEmpty()) {
                throw new AssertionError("seed " + seed + ": " + errors.get(0), errors.get(0));
            }
            assertTrue(hits.get() > 100, "the race found offers: " + hits + " of " + lookups);
            // Quiescent: each live publication is current and served, and nothing else is served.
            for (Offer o : live) {
                assertTrue(r1.isCurrent(o) && r2.isCurrent(o), "published, never withdrawn, not current: " + o);
                assertEquals(o, r1.lookup(o.key()));
            }
            Set<ChunkKey> liveKeys = ConcurrentHashMap.newKeySet();
            live.forEach(o -> liveKeys.add(o.key()));
            for (ChunkKey k : keys) {
                if (!liveKeys.contains(k)) {
                    assertEquals(null, r2.lookup(k), "served after every publication of it was withdrawn: " + k);
                }
            }
            long expectedLive = live.size();
            assertEquals(expectedLive, r1.liveSlots(), "live counter");
        } finally {
            r1.close();
            r2.close();
        }
    }
}
