package io.kvmarket.registry.shm;

import io.kvmarket.key.ChunkKey;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.registry.PublishOutcome;
import io.kvmarket.testkit.RegistryContractTest;
import io.kvmarket.registry.RegistryException;
import io.kvmarket.registry.Withdrawal;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.ByteOrder;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

import static io.kvmarket.registry.shm.RegistryFileDescriptor.*;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class NodeLocalRegistryTest extends RegistryContractTest {

    @TempDir
    Path dir;

    @Override
    protected OfferRegistry create() {
        return NodeLocalRegistry.open(dir, 64, clock::get);
    }

    @Test
    void twoOpeningsOfTheFileSeeEachOthersOffers() {
        try (NodeLocalRegistry other = NodeLocalRegistry.open(dir, 1024, clock::get)) {
            registry.publish(offer(0, 1));
            assertEquals(1, other.lookup(key(0)).generation());
            assertEquals(Withdrawal.WITHDRAWN, other.withdrawIfUnused(other.lookup(key(0)), Long.MAX_VALUE));
            assertNull(registry.lookup(key(0)));
        }
    }

    @Test
    void refusesToOverfillTheTable() {
        int published = 0;
        for (int i = 0; i < 64; i++) {
            if (registry.publish(offer(i, 1)) == PublishOutcome.PUBLISHED) {
                published++;
            }
        }
        assertEquals(48, published, "three quarters of 64 slots");
        assertEquals(PublishOutcome.REGISTRY_FULL, registry.publish(offer(100, 1)));
        for (int i = 0; i < 48; i++) {
            assertNotNull(registry.lookup(key(i)), "key " + i);
        }
    }

    @Test
    void churnFarBeyondCapacityKeepsLookupsExact() {
        // Every publish/withdraw leaves a tombstone; rebuilds must keep live offers findable and bounded.
        for (int round = 0; round < 50; round++) {
            for (int i = 0; i < 20; i++) {
                assertEquals(PublishOutcome.PUBLISHED, registry.publish(offer(round * 20 + i, round + 1)));
            }
            for (int i = 0; i < 20; i++) {
                Offer o = registry.lookup(key(round * 20 + i));
                assertNotNull(o, "round " + round + " key " + i);
                if (i % 2 == 0 || round < 49) {
                    registry.withdraw(o);
                }
            }
        }
        for (int i = 0; i < 20; i++) {
            Offer o = registry.lookup(key(49 * 20 + i));
            if (i % 2 == 0) {
                assertNull(o);
            } else {
                assertEquals(50, o.generation());
            }
        }
        assertEquals(10, ((NodeLocalRegistry) registry).liveSlots());
    }

    @Test
    @Timeout(10)
    void slotLeftHalfWrittenByAKilledWriterIsRepairedAndNeverBlocks() throws Exception {
        registry.publish(offer(0, 1));
        registry.publish(offer(1, 1));
        long slot = key(0).lo() & 63;
        // Simulate a writer killed mid-write: odd seq, slot named dirty in the header, lock released by the kernel.
        try (FileChannel ch = FileChannel.open(dir.resolve(NodeLocalRegistry.FILE_NAME), StandardOpenOption.READ,
                StandardOpenOption.WRITE)) {
            MappedByteBuffer m = ch.map(FileChannel.MapMode.READ_WRITE, 0, ch.size());
            m.order(ByteOrder.LITTLE_ENDIAN);
            int base = slotOffset(slot);
            assertEquals(key(0).lo(), m.getLong(base + KEY_LO));
            m.putLong(base + SEQ, m.getLong(base + SEQ) + 1);
            m.putLong(base + KEY_HI, 0xdeadL);
            m.putLong(DIRTY_SLOT_OFFSET, slot);
        }
        assertNull(registry.lookup(key(0)), "a torn slot is never served");
        assertEquals(PublishOutcome.PUBLISHED, registry.publish(offer(2, 1)));
        assertNotNull(registry.lookup(key(1)));
        assertEquals(PublishOutcome.PUBLISHED, registry.publish(offer(0, 2)));
        assertEquals(2, registry.lookup(key(0)).generation());
    }

    @Test
    void countersAreRecountedAfterAWriterKilledBetweenSlotAndCounter() throws Exception {
        registry.publish(offer(0, 1));
        registry.publish(offer(1, 1));
        try (FileChannel ch = FileChannel.open(dir.resolve(NodeLocalRegistry.FILE_NAME), StandardOpenOption.READ,
                StandardOpenOption.WRITE)) {
            MappedByteBuffer m = ch.map(FileChannel.MapMode.READ_WRITE, 0, ch.size());
            m.order(ByteOrder.LITTLE_ENDIAN);
            m.putLong(LIVE_OFFSET, 40); // the slot write finished (seq even), its counter update did not
            m.putLong(DIRTY_SLOT_OFFSET, key(1).lo() & 63);
        }
        assertEquals(PublishOutcome.PUBLISHED, registry.publish(offer(2, 1)), "a wrong count must not fill the table");
        assertEquals(3, ((NodeLocalRegistry) registry).liveSlots());
        assertNotNull(registry.lookup(key(1)), "a slot that was written completely stays");
    }

    @Test
    void anInterruptedCallerNeitherBreaksTheRegistryNorLosesItsInterrupt() throws Exception {
        Thread.currentThread().interrupt();
        try {
            assertEquals(PublishOutcome.PUBLISHED, registry.publish(offer(0, 1)));
            assertTrue(Thread.currentThread().isInterrupted(), "the caller's interrupt is kept");
        } finally {
            Thread.interrupted();
        }
        assertEquals(PublishOutcome.PUBLISHED, registry.publish(offer(1, 1)), "writes still work afterwards");
        assertEquals(Withdrawal.WITHDRAWN, registry.withdrawIfUnused(registry.lookup(key(0)), Long.MAX_VALUE));
    }

    @Test
    void damagedCountersInTheHeaderAreRecountedNotTrusted() throws Exception {
        registry.publish(offer(0, 1));
        registry.publish(offer(1, 1));
        try (FileChannel ch = FileChannel.open(dir.resolve(NodeLocalRegistry.FILE_NAME), StandardOpenOption.READ,
                StandardOpenOption.WRITE)) {
            MappedByteBuffer header = ch.map(FileChannel.MapMode.READ_WRITE, 0, HEADER_BYTES);
            header.order(ByteOrder.LITTLE_ENDIAN).putLong(LIVE_OFFSET, 60_000).putLong(TOMBSTONES_OFFSET, -7);
        }
        assertEquals(PublishOutcome.PUBLISHED, registry.publish(offer(2, 1)), "a bad count must not refuse exports");
        assertEquals(3, ((NodeLocalRegistry) registry).liveSlots());
        try (FileChannel ch = FileChannel.open(dir.resolve(NodeLocalRegistry.FILE_NAME), StandardOpenOption.READ,
                StandardOpenOption.WRITE)) {
            MappedByteBuffer header = ch.map(FileChannel.MapMode.READ_WRITE, 0, HEADER_BYTES);
            header.order(ByteOrder.LITTLE_ENDIAN).putLong(LIVE_OFFSET, 40);
        }
        try (NodeLocalRegistry reopened = NodeLocalRegistry.open(dir, 64, clock::get)) {
            assertEquals(3, reopened.liveSlots(), "a plausible but wrong count is recounted when a process opens");
        }
        for (int i = 3; i < 48; i++) {
            assertEquals(PublishOutcome.PUBLISHED, registry.publish(offer(i, 1)), "offer " + i);
        }
        assertEquals(PublishOutcome.REGISTRY_FULL, registry.publish(offer(48, 1)), "a full table is still full");
    }

    @Test
    void closingOneOpeningLeavesAnotherWorking() {
        NodeLocalRegistry other = NodeLocalRegistry.open(dir, 64, clock::get);
        other.publish(offer(0, 1));
        other.close();
        assertEquals(PublishOutcome.PUBLISHED, registry.publish(offer(1, 1)));
        assertNotNull(registry.lookup(key(0)));
    }

    @Test
    void corruptedFileIsReportedNotTrusted() throws Exception {
        Path other = io.kvmarket.node.NodeDirectory.ensure(dir.resolve("corrupt"));
        Files.write(other.resolve(NodeLocalRegistry.FILE_NAME), new byte[4096]);
        assertThrows(RegistryException.class, () -> NodeLocalRegistry.open(other, 64));
        Files.write(other.resolve(NodeLocalRegistry.FILE_NAME), new byte[10]);
        assertThrows(RegistryException.class, () -> NodeLocalRegistry.open(other, 64));
    }

    @Test
    void rejectsCapacitiesThatAreNotPowersOfTwo() {
        assertThrows(IllegalArgumentException.class, () -> NodeLocalRegistry.open(dir.resolve("x"), 100));
        assertThrows(IllegalArgumentException.class, () -> NodeLocalRegistry.open(dir.resolve("x"), 8));
    }

    @Test
    void anOfferTheExporterKeepsNeverFailsAPinRacingIt() throws InterruptedException {
        Offer o = offer(0, 1);
        registry.publish(o);
        assertTrue(registry.pin(o, 60_000));
        registry.unpin(o);
        AtomicBoolean stop = new AtomicBoolean();
        AtomicReference<Withdrawal> wrong = new AtomicReference<>();
        Thread exporter = new Thread(() -> {
            while (!stop.get()) {
                Withdrawal w = registry.withdrawIfUnused(o, 0); // imported since 0: always kept
                if (w == Withdrawal.WITHDRAWN) {
                    wrong.set(w);
                }
            }
        });
        exporter.start();
        int failed = 0;
        long end = System.nanoTime() + 300_000_000L;
        while (System.nanoTime() < end) {
            if (registry.pin(o, 60_000)) {
                registry.unpin(o);
            } else {
                failed++;
            }
        }
        stop.set(true);
        exporter.join();
        assertNull(wrong.get());
        assertEquals(0, failed, "pins of an offer that stayed published failed");
        assertEquals(Withdrawal.WITHDRAWN, registry.withdrawIfUnused(o, Long.MAX_VALUE), "no stray pin is left");
    }

    @Test
    void pinsSurviveATableRebuild() {
        Offer pinned = offer(500, 1);
        registry.publish(pinned);
        assertTrue(registry.pin(pinned, 60_000));
        for (int i = 0; i < 40; i++) {
            Offer o = offer(i, 1);
            registry.publish(o);
            registry.withdraw(o);
        }
        assertTrue(registry.isCurrent(pinned));
        assertEquals(Withdrawal.PINNED, registry.withdrawIfUnused(pinned, Long.MAX_VALUE),
                "the pin must outlive the rebuild");
        registry.unpin(pinned);
        assertEquals(Withdrawal.IMPORTED_SINCE, registry.withdrawIfUnused(pinned, clock.get() - 1),
                "and so must the time of the import");
    }

    @Test
    void slotOfAKeyThatIsGoneIsReusedByTheSameKey() {
        ChunkKey k = key(3);
        for (int g = 1; g < 200; g++) {
            Offer o = offer(k, io.kvmarket.node.ProcessIdentity.current(), g, clock.get() + 1000);
            assertEquals(PublishOutcome.PUBLISHED, registry.publish(o));
            registry.withdraw(o);
        }
        assertTrue(((NodeLocalRegistry) registry).liveSlots() == 0);
    }
}
