package io.kvmarket.publicapi;

import io.kvmarket.device.host.HostDevice;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.pool.ExportPool;
import io.kvmarket.registry.InProcessRegistry;
import io.kvmarket.registry.Offer;
import io.kvmarket.transfer.ServedPool;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The export pool as a network transport serves it: only exactly what it publishes now can be held, a held chunk is
 * neither evicted nor reused, and a pool closed while a chunk is held frees its memory when the hold ends.
 */
@Timeout(60)
class ServedPoolTest {

    @TempDir
    Path dir;

    @Test
    void onlyTheExactPublicationCanBeHeld() {
        try (HostDevice device = new HostDevice(dir); InProcessRegistry registry = new InProcessRegistry()) {
            ExportPool pool = new ExportPool(device, registry, 4 * 64, 64);
            Offer o = publish(pool, registry, 1);
            assertNull(pool.hold(o.key(), o.generation() + 1, o.offset(), 64), "another generation");
            assertNull(pool.hold(new ChunkKey(9, 99), o.generation(), o.offset(), 64), "another key");
            assertNull(pool.hold(o.key(), o.generation(), o.offset() + 1, 64), "an unaligned offset");
            assertNull(pool.hold(o.key(), o.generation(), o.offset(), 128), "a longer span");
            assertNull(pool.hold(o.key(), o.generation(), 4 * 64, 64), "past the pool");
            assertNull(pool.hold(o.key(), o.generation(), -64, 64), "a negative offset");
            assertNull(pool.hold(o.key(), o.generation(), Long.MAX_VALUE - 63, 64), "an absurd offset");
            ServedPool.Hold h = pool.hold(o.key(), o.generation(), o.offset(), 64);
            assertNotNull(h);
            h.close();
            h.close();
            pool.withdrawAll();
            assertNull(pool.hold(o.key(), o.generation(), o.offset(), 64), "a withdrawn chunk");
            pool.close();
        }
    }

    @Test
    void aHeldChunkIsNeitherEvictedNorReused() {
        try (HostDevice device = new HostDevice(dir); InProcessRegistry registry = new InProcessRegistry()) {
            ExportPool pool = new ExportPool(device, registry, 2 * 64, 64);
            Offer held = publish(pool, registry, 1);
            Offer other = publish(pool, registry, 2);
            ServedPool.Hold h = pool.hold(held.key(), held.generation(), held.offset(), 64);
            try (ExportPool.Reservation r = pool.reserve(2)) {
                assertEquals(1, r.size(), "only the unheld chunk is evicted");
                assertEquals(other.offset(), r.offset(0));
            }
            assertTrue(registry.isCurrent(held), "the held chunk stays offered");
            h.close();
            try (ExportPool.Reservation r = pool.reserve(2)) {
                assertEquals(2, r.size(), "released, it can go");
            }
            pool.close();
        }
    }

    @Test
    void aPoolClosedUnderAHoldFreesItsMemoryWhenTheHoldEnds() throws Exception {
        try (HostDevice device = new HostDevice(dir); InProcessRegistry registry = new InProcessRegistry()) {
            ExportPool pool = new ExportPool(device, registry, 2 * 64, 64);
            Offer o = publish(pool, registry, 1);
            ServedPool.Hold h = pool.hold(o.key(), o.generation(), o.offset(), 64);
            pool.close();
            assertTrue(pool.isClosed());
            assertEquals(1, memoryFiles(), "freed under a transfer still reading it");
            assertNull(pool.hold(o.key(), o.generation(), o.offset(), 64), "a closed pool serves nothing");
            h.close();
            assertEquals(0, memoryFiles(), "the last hold frees the closed pool");
        }
    }

    /** The hold an RDMA transport takes while a NIC may read the pool: memory kept, chunks not. */
    @Test
    void aMemoryHoldKeepsTheMemoryOfAClosedPoolUntilItsHolderLetsGo() throws Exception {
        try (HostDevice device = new HostDevice(dir); InProcessRegistry registry = new InProcessRegistry()) {
            ExportPool pool = new ExportPool(device, registry, 2 * 64, 64);
            Offer o = publish(pool, registry, 1);
            AtomicInteger told = new AtomicInteger();
            AtomicLong filesWhenTold = new AtomicLong(-1);
            ServedPool.Hold[] hold = new ServedPool.Hold[1];
            hold[0] = pool.holdMemory(() -> {
                told.incrementAndGet();
                try {
                    filesWhenTold.set(memoryFiles());
                } catch (Exception e) {
                    throw new IllegalStateException(e);
                }
            });
            ServedPool.Hold second = pool.holdMemory(told::incrementAndGet);
            try (ExportPool.Reservation r = pool.reserve(2)) {
                assertEquals(2, r.size(), "a memory hold does not keep chunks from eviction");
            }
            assertFalse(registry.isCurrent(o), "evicted");
            pool.close();
            assertEquals(2, told.get(), "each holder is told once, on close");
            assertEquals(1, filesWhenTold.get(), "told before the memory is freed");
            assertNull(pool.holdMemory(told::incrementAndGet), "a closed pool takes no new memory hold");
            hold[0].close();
            hold[0].close();
            assertEquals(1, memoryFiles(), "one hold left");
            second.close();
            assertEquals(0, memoryFiles(), "the last memory hold frees the closed pool");
            assertEquals(2, told.get());
        }
    }

    private Offer publish(ExportPool pool, InProcessRegistry registry, long gen) {
        try (ExportPool.Reservation r = pool.reserve(1)) {
            Offer o = MisuseTest.offer(gen, r.offset(0));
            registry.publish(o);
            r.published(0, o);
            return o;
        }
    }

    private long memoryFiles() throws Exception {
        try (Stream<Path> s = Files.list(dir.resolve("host-device"))) {
            return s.filter(p -> p.toString().endsWith(".kvmem")).count();
        }
    }
}
