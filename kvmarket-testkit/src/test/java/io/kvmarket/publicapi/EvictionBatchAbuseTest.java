package io.kvmarket.publicapi;

import io.kvmarket.device.host.HostDevice;
import io.kvmarket.pool.ExportPool;
import io.kvmarket.registry.InProcessRegistry;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.registry.RegistryException;
import io.kvmarket.registry.Withdrawal;
import io.kvmarket.transfer.ServedPool;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Proxy;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.function.BiFunction;

import static org.junit.jupiter.api.Assertions.assertAll;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * The batched eviction against a faulty registry (outcome arrays of the wrong length or null, null
 * elements, throwing mid-batch), duplicated offers, a pool of one chunk, and a pool closed from inside the eviction.
 */
@Timeout(60)
class EvictionBatchAbuseTest {

    @TempDir
    Path dir;

    /** The real registry, but its batched withdrawal answered by {@code batch} (given the real registry). */
    static OfferRegistry faulty(OfferRegistry real,
                                BiFunction<List<Offer>, long[], Withdrawal[]> batch) {
        return (OfferRegistry) Proxy.newProxyInstance(OfferRegistry.class.getClassLoader(),
                new Class<?>[] {OfferRegistry.class}, (proxy, method, args) -> {
                    if (method.getName().equals("withdrawIfUnused") && args[0] instanceof List<?>) {
                        @SuppressWarnings("unchecked")
                        List<Offer> offers = (List<Offer>) args[0];
                        return batch.apply(offers, (long[]) args[1]);
                    }
                    try {
                        return method.invoke(real, args);
                    } catch (InvocationTargetException e) {
                        throw e.getCause();
                    }
                });
    }

    static List<Offer> fill(ExportPool pool, OfferRegistry registry, int chunks, long firstGen) {
        List<Offer> offers = new ArrayList<>();
        for (int i = 0; i < chunks; i++) {
            try (ExportPool.Reservation r = pool.reserve(1)) {
                assertEquals(1, r.size());
                Offer o = MisuseTest.offer(firstGen + i, r.offset(0));
                registry.publish(o);
                r.published(0, o);
                offers.add(o);
            }
        }
        return offers;
    }

    private boolean honest;

    /**
     * The registry withdraws what it was asked, and answers one outcome too many. The pool must neither throw (no
     * exception escapes reserve for a registry's fault) nor lose slots: the two chunks were withdrawn, so once the
     * registry answers sanely again the whole pool can be reserved.
     */
    @Test
    void tooManyOutcomesNeitherThrowNorLoseSlots() {
        try (HostDevice device = new HostDevice(dir); InProcessRegistry real = new InProcessRegistry()) {
            OfferRegistry registry = faulty(real, (offers, used) -> {
                Withdrawal[] ok = real.withdrawIfUnused(offers, used);
                if (honest) {
                    return ok;
                }
                Withdrawal[] more = Arrays.copyOf(ok, ok.length + 1);
                more[ok.length] = Withdrawal.WITHDRAWN;
                return more;
            });
            ExportPool pool = new ExportPool(device, registry, 2 * 64, 64);
            fill(pool, registry, 2, 1);
            RuntimeException escaped = null;
            try (ExportPool.Reservation r = pool.reserve(2)) {
                assertTrue(r.size() <= 2);
            } catch (RuntimeException e) {
                escaped = e;
            }
            honest = true;
            int later;
            try (ExportPool.Reservation r = pool.reserve(2)) {
                later = r.size();
            }
            pool.close();
            String escapedText = String.valueOf(escaped);
            assertAll(() -> assertEquals(2, later, "slots lost for good: the pool shrank"),
                    () -> assertEquals("null", escapedText,
                            "an exception escaped reserve for a registry's malformed answer"));
        }
    }

    /** One extra, null outcome: the warning loop indexes the offers past their end. */
    @Test
    void anExtraNullOutcomeDoesNotThrow() {
        try (HostDevice device = new HostDevice(dir); InProcessRegistry real = new InProcessRegistry()) {
            OfferRegistry registry = faulty(real, (offers, used) ->
                    Arrays.copyOf(real.withdrawIfUnused(offers, used), offers.size() + 1));
            ExportPool pool = new ExportPool(device, registry, 2 * 64, 64);
            List<Offer> offers = fill(pool, registry, 2, 1);
            try (ExportPool.Reservation r = pool.reserve(1)) {
                assertTrue(r.size() <= 1);
            } catch (RuntimeException e) {
                fail("reserve threw for a registry's malformed answer: " + e);
            } finally {
                pool.close();
            }
            assertFalse(offers.isEmpty());
        }
    }

    /** A registry answering null for the whole batch: every outcome unknown, so nothing is reused; no throw. */
    @Test
    void aNullAnswerKeepsTheMemoryAndDoesNotThrow() {
        try (HostDevice device = new HostDevice(dir); InProcessRegistry real = new InProcessRegistry()) {
            OfferRegistry registry = faulty(real, (offers, used) -> null);
            ExportPool pool = new ExportPool(device, registry, 2 * 64, 64);
            List<Offer> offers = fill(pool, registry, 2, 1);
            try (ExportPool.Reservation r = pool.reserve(2)) {
                assertEquals(0, r.size());
            } catch (RuntimeException e) {
                fail("reserve threw for a registry's null answer: " + e);
            } finally {
                pool.close();
            }
            assertEquals(2, offers.size());
        }
    }

    /**
     * The registry withdraws all it is asked but reports only the first outcome (too few): an answer that is not one
     * outcome per offer is trusted for none, so every chunk's memory is kept; nothing throws. Once asked again (the
     * withdrawn ones are found gone), they go.
     */
    @Test
    void tooFewOutcomesKeepTheUnreportedMemory() {
        try (HostDevice device = new HostDevice(dir); InProcessRegistry real = new InProcessRegistry()) {
            OfferRegistry registry = faulty(real, (offers, used) -> {
                Withdrawal[] ok = real.withdrawIfUnused(offers, used);
                return honest ? ok : Arrays.copyOf(ok, Math.min(1, ok.length));
            });
            ExportPool pool = new ExportPool(device, registry, 3 * 64, 64);
            List<Offer> offers = fill(pool, registry, 3, 1);
            try (ExportPool.Reservation r = pool.reserve(3)) {
                assertEquals(0, r.size(), "a malformed answer frees nothing");
            }
            honest = true;
            try (ExportPool.Reservation r = pool.reserve(3)) {
                assertEquals(3, r.size());
            }
            pool.close();
        }
    }

    /**
     * Null elements (unknown outcome) although the registry did withdraw: those slots stay with the pool; the
     * known ones are reused; the pool never reserves more than wanted.
     */
    @Test
    void nullElementsKeepTheirMemory() {
        try (HostDevice device = new HostDevice(dir); InProcessRegistry real = new InProcessRegistry()) {
            OfferRegistry registry = faulty(real, (offers, used) -> {
                Withdrawal[] ok = real.withdrawIfUnused(offers, used);
                for (int i = 0; i < ok.length; i++) {
                    if (offers.get(i).generation() % 2 == 1) {
                        ok[i] = null; // the 1st, 3rd and 5th chunk
                    }
                }
                return ok;
            });
            ExportPool pool = new ExportPool(device, registry, 5 * 64, 64);
            List<Offer> offers = fill(pool, registry, 5, 1);
            try (ExportPool.Reservation r = pool.reserve(2)) {
                Set<Long> got = new HashSet<>();
                for (int i = 0; i < r.size(); i++) {
                    got.add(r.offset(i));
                }
                // batch [0,1] -> 0 unknown, 1 withdrawn; batch [2] -> unknown; batch [3] -> withdrawn
                assertEquals(Set.of(offers.get(1).offset(), offers.get(3).offset()), got);
            }
            pool.close();
        }
    }

    /**
     * A registry that withdraws some of the batch, then throws a RegistryException: every outcome of the batch is
     * unknown, so nothing is reused and reserve does not throw.
     */
    @Test
    void aRegistryThatThrowsMidBatchKeepsEverything() {
        try (HostDevice device = new HostDevice(dir); InProcessRegistry real = new InProcessRegistry()) {
            OfferRegistry registry = faulty(real, (offers, used) -> {
                real.withdrawIfUnused(offers.get(0), used[0]);
                throw new RegistryException("connection reset mid-batch");
            });
            ExportPool pool = new ExportPool(device, registry, 3 * 64, 64);
            fill(pool, registry, 3, 1);
            try (ExportPool.Reservation r = pool.reserve(3)) {
                assertEquals(0, r.size());
            }
            assertEquals(3, pool.publishedChunks(), "kept as published: its outcome is unknown");
            pool.close();
        }
    }

    /** A registry answering WITHDRAWN for everything (a lying registry) never makes the pool exceed what it wants. */
    @Test
    void neverMoreThanWantedEvenWhenEveryAnswerIsWithdrawn() {
        try (HostDevice device = new HostDevice(dir); InProcessRegistry real = new InProcessRegistry()) {
            List<Integer> sizes = new ArrayList<>();
            OfferRegistry registry = faulty(real, (offers, used) -> {
                sizes.add(offers.size());
                Withdrawal[] w = new Withdrawal[offers.size()];
                Arrays.fill(w, Withdrawal.WITHDRAWN);
                return w;
            });
            ExportPool pool = new ExportPool(device, registry, 6 * 64, 64);
            fill(pool, registry, 6, 1);
            for (int wanted : new int[] {0, 1, 2, 3}) {
                long before = pool.evictions();
                try (ExportPool.Reservation r = pool.reserve(wanted)) {
                    assertEquals(wanted, r.size());
                    assertEquals(wanted, pool.evictions() - before, "evicted exactly what was wanted");
                    for (int i = 0; i < r.size(); i++) {
                        Offer o = MisuseTest.offer(100 + wanted * 10 + i, r.offset(i));
                        real.publish(o);
                        r.published(i, o);
                    }
                }
            }
            assertEquals(List.of(1, 2, 3), sizes);
            pool.close();
        }
    }

    /**
     * A careless exporter records the same offer for two slots: the batch then holds it twice. Its withdrawal
     * answers WITHDRAWN for both (the second finds it gone), as one call per candidate did.
     */
    @Test
    void aDuplicatedOfferInOneBatchFreesBothSlots() {
        try (HostDevice device = new HostDevice(dir); InProcessRegistry registry = new InProcessRegistry()) {
            Offer o = MisuseTest.offer(1, 0);
            registry.publish(o);
            ExportPool pool = new ExportPool(device, registry, 2 * 64, 64);
            for (int i = 0; i < 2; i++) {
                try (ExportPool.Reservation r = pool.reserve(1)) {
                    r.published(0, o);
                }
            }
            List<Long> got = new ArrayList<>();
            try (ExportPool.Reservation r = pool.reserve(2)) {
                for (int i = 0; i < r.size(); i++) {
                    got.add(r.offset(i));
                }
            }
            pool.close();
            assertEquals(List.of(0L, 64L), got);
            assertFalse(registry.isCurrent(o));
        }
    }

    /** A pool of one chunk: pinned, imported elsewhere, held, then free to go. */
    @Test
    void aPoolOfOneChunk() {
        long[] clock = {1_000};
        try (HostDevice device = new HostDevice(dir); InProcessRegistry registry = new InProcessRegistry(() -> clock[0])) {
            ExportPool pool = new ExportPool(device, registry, 64, 64);
            try (ExportPool.Reservation r = pool.reserve(0)) {
                assertEquals(0, r.size());
            }
            Offer o = fill(pool, registry, 1, 1).get(0);
            try (ExportPool.Reservation r = pool.reserve(0)) {
                assertEquals(0, r.size());
            }
            assertTrue(registry.pin(o, 5_000));
            try (ExportPool.Reservation r = pool.reserve(1)) {
                assertEquals(0, r.size(), "pinned");
            }
            clock[0] += 10;
            registry.unpin(o);
            clock[0] += 10;
            ServedPool.Hold h = pool.hold(o.key(), o.generation(), o.offset(), 64);
            try (ExportPool.Reservation r = pool.reserve(1)) {
                assertEquals(0, r.size(), "held");
            }
            assertTrue(registry.isCurrent(o));
            h.close();
            // imported since the pool's last use (the hold counted as a use, so import again)
            clock[0] += 10;
            assertTrue(registry.pin(o, 5_000));
            registry.unpin(o);
            clock[0] += 10;
            try (ExportPool.Reservation r = pool.reserve(1)) {
                assertEquals(1, r.size(), "the second chance runs out: nothing else to evict");
            }
            assertFalse(registry.isCurrent(o));
            pool.close();
        }
    }

    /**
     * The registry's batched withdrawal closes the pool (from the same thread: e.g. a registry that notices it was
     * fenced and shuts its marketplace down). A pool closed meanwhile has freed its memory; reserve must not hand out
     * slots of it.
     */
    @Test
    void aPoolClosedFromInsideTheEvictionHandsOutNothing() {
        ExportPool[] poolRef = new ExportPool[1];
        try (HostDevice device = new HostDevice(dir); InProcessRegistry real = new InProcessRegistry()) {
            OfferRegistry registry = faulty(real, (offers, used) -> {
                poolRef[0].close();
                return real.withdrawIfUnused(offers, used);
            });
            ExportPool pool = new ExportPool(device, registry, 2 * 64, 64);
            poolRef[0] = pool;
            fill(pool, registry, 2, 1);
            int got;
            try (ExportPool.Reservation r = pool.reserve(2)) {
                got = r.size();
            } catch (IllegalStateException closed) {
                got = 0;
            }
            assertTrue(pool.isClosed());
            assertEquals(0, got, "slots of a closed pool, whose memory is freed, were handed out");
        }
    }
}
