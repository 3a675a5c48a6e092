package io.kvmarket.publicapi;

import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.NodeId;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.PublishOutcome;
import io.kvmarket.registry.RegistryException;
import io.kvmarket.registry.Withdrawal;
import io.kvmarket.registry.shm.NodeLocalRegistry;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.ByteOrder;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/** Another process of the user damages slots of the v4 registry file; lookups, pins and rebuilds must cope. */
@Timeout(120)
class DamagedSlotTest {

    static final int HEADER = 128;
    static final int SLOT = 512;
    static final int SEQ = 0;
    static final int STATE = 8;
    static final int ENDPOINTS_LENGTH = 120;
    static final int ENDPOINTS = 128;

    @TempDir
    Path dir;

    /** An offer whose home slot in a 16-slot table is {@code slot}. */
    static Offer offer(long slot, long generation, List<Endpoint> endpoints) {
        return new Offer(new ChunkKey(slot * 1_000_003L + 5, slot), NodeId.local(), ProcessIdentity.current(),
                endpoints, 64 * slot, 64, 1, generation, System.currentTimeMillis() + 600_000);
    }

    static Endpoint ep(int kind, int len, int fill) {
        byte[] b = new byte[len];
        for (int i = 0; i < len; i++) {
            b[i] = (byte) (fill + i);
        }
        return new Endpoint(kind, b);
    }

    static MappedByteBuffer map(Path file) throws Exception {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            return (MappedByteBuffer) ch.map(FileChannel.MapMode.READ_WRITE, 0, ch.size()).order(ByteOrder.LITTLE_ENDIAN);
        }
    }

    /** Kinds of malformed endpoint areas that must never be served; returns a description. */
    static String damage(MappedByteBuffer m, int slot, int variant, Random rnd) {
        int base = HEADER + slot * SLOT;
        int e = base + ENDPOINTS;
        switch (variant) {
            case 0: { // truncated entry: header says 44 bytes, raw length leaves 10
                m.put(e, (byte) 1).put(e + 1, (byte) 44).put(e + 2, (byte) 0);
                m.putLong(base + ENDPOINTS_LENGTH, 13);
                return "truncated";
            }
            case 1: { // fewer than 3 bytes
                m.putLong(base + ENDPOINTS_LENGTH, 1 + rnd.nextInt(2));
                return "shorter than an entry header";
            }
            case 2: { // kind 0
                m.put(e, (byte) 0);
                return "kind 0";
            }
            case 3: { // duplicate kinds: two entries of kind 2
                m.put(e, (byte) 2).put(e + 1, (byte) 4).put(e + 2, (byte) 0).putInt(e + 3, 0x01020304);
                m.put(e + 7, (byte) 2).put(e + 8, (byte) 4).put(e + 9, (byte) 0).putInt(e + 10, 0x05060708);
                m.putLong(base + ENDPOINTS_LENGTH, 14);
                return "duplicate kinds";
            }
            case 4: { // entry length past the area
                m.put(e, (byte) 1).put(e + 1, (byte) 0xff).put(e + 2, (byte) 0xff);
                return "entry length 65535";
            }
            case 5: { // huge raw length
                m.putLong(base + ENDPOINTS_LENGTH, rnd.nextBoolean() ? Long.MAX_VALUE : 1L << 33);
                return "huge raw length";
            }
            case 6: { // negative raw length
                m.putLong(base + ENDPOINTS_LENGTH, rnd.nextBoolean() ? -1 : Long.MIN_VALUE);
                return "negative raw length";
            }
            case 7: { // zero-length entry
                m.put(e + 1, (byte) 0).put(e + 2, (byte) 0);
                m.putLong(base + ENDPOINTS_LENGTH, 3);
                return "zero-length entry";
            }
            case 8: { // entry of 300 bytes (over Endpoint.MAX_BYTES) that fits the area
                m.put(e, (byte) 3).put(e + 1, (byte) (300 & 0xff)).put(e + 2, (byte) (300 >>> 8));
                m.putLong(base + ENDPOINTS_LENGTH, 303);
                return "300-byte entry";
            }
            case 9: { // a second entry truncated after a good one
                long len = m.getLong(base + ENDPOINTS_LENGTH);
                m.put(e + (int) len, (byte) 9).put(e + (int) len + 1, (byte) 20);
                m.putLong(base + ENDPOINTS_LENGTH, len + 2);
                return "good entry then truncated entry";
            }
            default:
                throw new AssertionError();
        }
    }

    @Test
    void malformedEndpointListsAreNeverServedNorCrashNorMakeARebuildDropHealthyOffers() throws Exception {
        Random rnd = new Random(20240611);
        for (int round = 0; round < 120; round++) {
            int variant = round % 10;
            Path d = dir.resolve("r" + round);
            try (NodeLocalRegistry registry = NodeLocalRegistry.open(d, 16)) {
                List<Offer> healthy = new ArrayList<>();
                for (long s = 0; s < 5; s++) {
                    List<Endpoint> eps = s % 2 == 0 ? List.of(ep(1, 44, (int) s))
                            : List.of(ep(2, 10 + rnd.nextInt(40), (int) s), ep(1, 44, 3));
                    Offer o = offer(s, 100 + round * 100 + s, eps);
                    assertEquals(PublishOutcome.PUBLISHED, registry.publish(o));
                    healthy.add(o);
                }
                Offer victim = offer(8, 7 + round, List.of(ep(1, 44, 9)));
                assertEquals(PublishOutcome.PUBLISHED, registry.publish(victim));
                String what = damage(map(registry.file()), 8, variant, rnd);
                String ctx = "round " + round + " (" + what + ")";
                try {
                    assertNull(registry.lookup(victim.key()), ctx + ": served");
                    ChunkKey[] keys = {victim.key(), healthy.get(0).key()};
                    assertEquals(0, registry.lookupPrefix(keys, 2).size(), ctx);
                    registry.isCurrent(victim);
                    registry.pin(victim, 1000);
                    registry.unpin(victim);
                    registry.renew(victim, System.currentTimeMillis() + 1000);
                } catch (RuntimeException e) {
                    throw new AssertionError(ctx + ": reading a damaged slot threw " + e, e);
                }
                try {
                    for (long s = 10; s < 13; s++) { // third tombstone > 16/8 triggers a rebuild
                        Offer f = offer(s, 5000 + s, List.of(ep(1, 44, 1)));
                        registry.publish(f);
                        registry.withdraw(f);
                    }
                    registry.sweep();
                } catch (RuntimeException e) {
                    throw new AssertionError(ctx + ": a writer meeting the damaged slot threw " + e, e);
                }
                for (Offer o : healthy) {
                    assertEquals(o, registry.lookup(o.key()), ctx + ": healthy offer lost or changed");
                    assertTrue(registry.isCurrent(o), ctx);
                }
                assertNull(registry.lookup(victim.key()), ctx + ": served after rebuild");
                Offer again = offer(8, 99_999, List.of(ep(1, 44, 2)));
                assertEquals(PublishOutcome.PUBLISHED, registry.publish(again), ctx + ": key not republishable");
            }
        }
    }

    /**
     * A slot whose state word another process overwrote with a value that is neither empty, live nor tombstone:
     * lookups pass over it, and publishing the same key takes the slot over (it once answered ALREADY_OFFERED, so
     * the key was neither served nor publishable).
     */
    @Test
    void aSlotWithAnUnknownStateDoesNotMakeItsKeyUnpublishable() throws Exception {
        try (NodeLocalRegistry registry = NodeLocalRegistry.open(dir, 16)) {
            Offer o = offer(3, 1, List.of(ep(1, 44, 1)));
            registry.publish(o);
            map(registry.file()).putLong(HEADER + 3 * SLOT + STATE, 7);
            assertNull(registry.lookup(o.key()));
            PublishOutcome again = registry.publish(offer(3, 2, List.of(ep(1, 44, 2))));
            assertTrue(again == PublishOutcome.PUBLISHED || registry.lookup(o.key()) != null,
                    "key neither served nor publishable: publish said " + again + ", lookup says null");
        }
    }

    /**
     * A slot left with an odd seq (not named dirty, so never repaired): writers, holding the file lock, must find it
     * (it once went through the lock-free path, which gives up on an odd seq, so withdrawIfUnused reported WITHDRAWN
     * while the next rebuild published the offer again over reused memory).
     */
    @Test
    void anOfferReportedWithdrawnIsNeverServedAgain() throws Exception {
        try (NodeLocalRegistry registry = NodeLocalRegistry.open(dir, 16)) {
            Offer o = offer(3, 1, List.of(ep(1, 44, 1)));
            assertEquals(PublishOutcome.PUBLISHED, registry.publish(o));
            MappedByteBuffer m = map(registry.file());
            int seqAt = HEADER + 3 * SLOT + SEQ;
            m.putLong(seqAt, m.getLong(seqAt) + 1); // a stray write left it odd
            Withdrawal w = registry.withdrawIfUnused(o, Long.MAX_VALUE);
            for (long s = 10; s < 13; s++) { // force a rebuild
                Offer f = offer(s, 5000 + s, List.of(ep(1, 44, 1)));
                registry.publish(f);
                registry.withdraw(f);
            }
            if (w == Withdrawal.WITHDRAWN) {
                assertNull(registry.lookup(o.key()), "withdrawIfUnused said WITHDRAWN (the pool reuses the memory), "
                        + "yet the rebuild resurrected the offer and it is served");
                assertTrue(!registry.isCurrent(o), "a withdrawn publication passes the post-copy check");
            }
        }
    }

    /**
     * Raw endpoints length past the 384-byte area: the slot is neither served nor current, though its clamped bytes
     * equal a 384-byte offer's encoding.
     */
    @Test
    void aSlotWithAnOutOfRangeEndpointsLengthIsNotCurrent() throws Exception {
        try (NodeLocalRegistry registry = NodeLocalRegistry.open(dir, 16)) {
            List<Endpoint> full = List.of(ep(1, 255, 1), ep(2, 384 - 258 - 3, 2));
            assertEquals(384, Endpoint.encode(full).length);
            Offer o = offer(3, 1, full);
            assertEquals(PublishOutcome.PUBLISHED, registry.publish(o));
            map(registry.file()).putLong(HEADER + 3 * SLOT + ENDPOINTS_LENGTH, 100_000);
            assertNull(registry.lookup(o.key()), "malformed slot not served");
            assertTrue(!registry.isCurrent(o) && !registry.pin(o, 1000),
                    "a malformed (never served) slot passes isCurrent/pin; with length 0 it would not");
        }
    }

    /**
     * A header whose capacity is 2^55 over a 128-byte file: 128 + 2^55 * 512 wraps to 128, so the size check
     * passes. Opening must fail with RegistryException ("header is damaged"), not an unchecked index error.
     */
    @Test
    void aHeaderWhoseCapacityOverflowsTheSizeCheckIsRefusedAsDamaged() throws Exception {
        Path file;
        try (NodeLocalRegistry registry = NodeLocalRegistry.open(dir, 16)) {
            file = registry.file();
        }
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            ch.truncate(HEADER);
            java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(0, 1L << 55);
            ch.write(b, 16);
        }
        try (NodeLocalRegistry r = NodeLocalRegistry.open(dir, 16)) {
            fail("opened a registry over a 128-byte file claiming 2^55 slots: " + r.liveSlots());
        } catch (RegistryException expected) {
            // the documented failure
        } catch (RuntimeException e) {
            throw new AssertionError("damaged header escaped as " + e, e);
        }
    }

    @Test
    void damagedSlotsStillLetTheKeyBeFoundInTheNextSlot() throws Exception {
        // Sanity: a healthy offer behind a damaged one in the same probe chain stays served.
        try (NodeLocalRegistry registry = NodeLocalRegistry.open(dir, 16)) {
            Offer first = offer(3, 1, List.of(ep(1, 44, 1)));
            Offer second = new Offer(new ChunkKey(77, 3 + 16), NodeId.local(), ProcessIdentity.current(),
                    List.of(ep(1, 44, 2)), 0, 64, 1, 2, System.currentTimeMillis() + 600_000);
            registry.publish(first);
            registry.publish(second);
            map(registry.file()).put(HEADER + 3 * SLOT + ENDPOINTS, (byte) 0);
            assertNotNull(registry.lookup(second.key()));
        }
    }
}
