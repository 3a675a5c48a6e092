package io.kvmarket.publicapi;

import io.kvmarket.device.host.HostDevice;
import io.kvmarket.pool.ExportPool;
import io.kvmarket.registry.InProcessRegistry;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.registry.Withdrawal;
import io.kvmarket.transfer.ServedPool;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicIntegerArray;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReferenceArray;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Seeded concurrent abuse of one pool: exporters reserve, write the chunk's generation into its memory and publish;
 * an importer pins live offers and checks their memory does not change under the pin; a transport holds chunks and
 * checks none is reserved while held; everyone touches; registry withdrawals fail at random; the pool is closed while
 * exporters are evicting. Exact checks: a reserved slot is never live in the registry nor held, the bytes under a pin
 * never change, and only IllegalStateException (closed) escapes reserve.
 */
@Timeout(120)
class EvictionConcurrencyTest {

    @TempDir
    Path dir;

    static final AtomicLong EVICTIONS = new AtomicLong();
    static final AtomicLong PINS = new AtomicLong();

    @Test
    void concurrentReserveTouchHoldPinAndClose() throws Exception {
        for (long seed = 1; seed <= 8; seed++) {
            run(seed);
        }
        System.out.println("EvictionConcurrencyTest: " + EVICTIONS + " evictions, " + PINS + " pins");
        assertTrue(EVICTIONS.get() > 200 && PINS.get() > 200, "exercised too little");
    }

    /** {@code real}, whose withdrawals fail (an unknown outcome) {@code percent}% of the time, seeded. */
    static OfferRegistry failing(OfferRegistry real, long seed, int percent) {
        Random random = new Random(seed);
        return EvictionBatchAbuseTest.faulty(real, (offers, usedSince) -> {
            Withdrawal[] out = new Withdrawal[offers.size()];
            for (int i = 0; i < out.length; i++) {
                boolean fail;
                synchronized (random) {
                    fail = random.nextInt(100) < percent;
                }
                out[i] = fail ? null : real.withdrawIfUnused(offers.get(i), usedSince[i]);
            }
            return out;
        });
    }

    private void run(long seed) throws Exception {
        int cap = 1 + (int) (seed % 4);
        AtomicLong gens = new AtomicLong(seed * 1_000_000);
        try (HostDevice device = new HostDevice(dir); InProcessRegistry real = new InProcessRegistry()) {
            OfferRegistry registry = failing(real, seed, 10);
            ExportPool pool = new ExportPool(device, registry, cap * 64L, 64);
            ByteBuffer mem = device.hostView(pool.buffer()).orElseThrow();
            AtomicReferenceArray<Offer> liveAt = new AtomicReferenceArray<>(cap);
            AtomicIntegerArray reserved = new AtomicIntegerArray(cap);
            AtomicIntegerArray held = new AtomicIntegerArray(cap);
            ConcurrentLinkedQueue<String> violations = new ConcurrentLinkedQueue<>();
            AtomicBoolean stop = new AtomicBoolean();
            AtomicLong pins = new AtomicLong();
            AtomicBoolean importerStop = new AtomicBoolean();
            List<Thread> threads = new ArrayList<>();
            CountDownLatch go = new CountDownLatch(1);
            for (int t = 0; t < 3; t++) {
                Random rnd = new Random(seed * 17 + t);
                threads.add(new Thread(() -> {
                    await(go);
                    while (!stop.get()) {
                        ExportPool.Reservation r;
                        try {
                            r = pool.reserve(rnd.nextInt(cap + 1));
                        } catch (IllegalStateException closed) {
                            return;
                        } catch (RuntimeException e) {
                            violations.add("reserve threw " + e);
                            return;
                        }
                        try (r) {
                            for (int i = 0; i < r.size(); i++) {
                                int slot = (int) (r.offset(i) / 64);
                                if (reserved.getAndIncrement(slot) != 0) {
                                    violations.add("slot " + slot + " reserved twice at once");
                                }
                                Offer prev = liveAt.get(slot);
                                if (prev != null && real.isCurrent(prev)) {
                                    violations.add("slot " + slot + " reserved while offered: " + prev);
                                }
                                if (held.get(slot) != 0) {
                                    violations.add("slot " + slot + " reserved while held");
                                }
                            }
                            for (int i = 0; i < r.size(); i++) {
                                int slot = (int) (r.offset(i) / 64);
                                long gen = gens.incrementAndGet();
                                mem.putLong((int) r.offset(i), gen);
                                reserved.decrementAndGet(slot);
                                if (rnd.nextInt(4) == 0) {
                                    continue; // returned unpublished
                                }
                                Offer o = MisuseTest.offer(gen, r.offset(i));
                                real.publish(o);
                                liveAt.set(slot, o);
                                r.published(i, o);
                            }
                        }
                        Offer any = liveAt.get(rnd.nextInt(cap));
                        if (any != null) {
                            pool.touch(any.key());
                        }
                    }
                }, "exporter-" + t));
            }
            Random irnd = new Random(seed * 31);
            threads.add(new Thread(() -> {
                await(go);
                while (!importerStop.get()) {
                    Offer o = liveAt.get(irnd.nextInt(cap));
                    if (o == null || !real.pin(o, 10_000)) {
                        continue;
                    }
                    pins.incrementAndGet();
                    try {
                        for (int k = 0; k < 3; k++) {
                            long seen = mem.getLong((int) o.offset());
                            if (seen != o.generation()) {
                                violations.add("bytes under a pin changed: " + o.generation() + " -> " + seen);
                            }
                            if (reserved.get((int) (o.offset() / 64)) != 0) {
                                violations.add("pinned slot reserved " + o);
                            }
                            Thread.yield();
                        }
                    } finally {
                        real.unpin(o);
                    }
                }
            }, "importer"));
            Random trnd = new Random(seed * 37);
            threads.add(new Thread(() -> {
                await(go);
                while (!stop.get()) {
                    Offer o = liveAt.get(trnd.nextInt(cap));
                    if (o == null) {
                        continue;
                    }
                    ServedPool.Hold h = pool.hold(o.key(), o.generation(), o.offset(), 64);
                    if (h == null) {
                        continue;
                    }
                    int slot = (int) (o.offset() / 64);
                    held.incrementAndGet(slot);
                    long seen = mem.getLong((int) o.offset());
                    if (seen != o.generation()) {
                        violations.add("bytes under a hold are another chunk's: " + o.generation() + " -> " + seen);
                    }
                    if (reserved.get(slot) != 0) {
                        violations.add("held slot reserved " + o);
                    }
                    pool.touch(o.key());
                    held.decrementAndGet(slot);
                    h.close();
                }
            }, "transport"));
            threads.forEach(Thread::start);
            go.countDown();
            Thread.sleep(400);
            importerStop.set(true);
            threads.get(3).join(5_000);
            pool.close(); // exporters still evicting
            Thread.sleep(50);
            stop.set(true);
            for (Thread t : threads) {
                t.join(10_000);
                assertTrue(!t.isAlive(), t.getName() + " stuck");
            }
            assertEquals(List.of(), new ArrayList<>(violations), "seed " + seed);
            assertTrue(pool.isClosed());
            EVICTIONS.addAndGet(pool.evictions());
            PINS.addAndGet(pins.get());
            try {
                pool.reserve(0);
                violations.add("reserve on a closed pool");
            } catch (IllegalStateException expected) {
            }
            assertEquals(List.of(), new ArrayList<>(violations), "seed " + seed);
        }
    }

    private static void await(CountDownLatch l) {
        try {
            l.await();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
