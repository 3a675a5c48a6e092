package io.kvmarket.testkit;

import io.kvmarket.registry.Endpoint;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.registry.PublishOutcome;
import io.kvmarket.registry.Withdrawal;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.util.List;
import java.util.concurrent.atomic.AtomicLong;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Behaviour every {@link OfferRegistry} must have; each implementation's test extends this and supplies
 * {@link #create()}, a fresh registry whose clock is {@link #clock}.
 */
@Timeout(60)
public abstract class RegistryContractTest {

    protected final AtomicLong clock = new AtomicLong(1_000_000);
    protected OfferRegistry registry;

    protected abstract OfferRegistry create();

    @BeforeEach
    void open() {
        registry = create();
    }

    @AfterEach
    void close() {
        registry.close();
    }

    public static ChunkKey key(int i) {
        return new ChunkKey(0x1234_0000L + i, 0x9e3779b97f4a7c15L * (i + 1));
    }

    public static Offer offer(ChunkKey key, ProcessIdentity owner, long generation, long expiry) {
        return Offer.of(key, 7, owner, ipc(1, 2, 3, (int) generation), 4096 * generation, 4096, 42,
                generation, expiry);
    }

    protected Offer offer(int i, long generation) {
        return offer(key(i), ProcessIdentity.current(), generation, clock.get() + 10_000);
    }

    public static ChunkKey[] keys(int n) {
        ChunkKey[] k = new ChunkKey[n];
        for (int i = 0; i < n; i++) {
            k[i] = key(i);
        }
        return k;
    }

    /** A device IPC endpoint of the given bytes. */
    public static Endpoint ipc(int... bytes) {
        byte[] b = new byte[bytes.length];
        for (int i = 0; i < b.length; i++) {
            b[i] = (byte) bytes[i];
        }
        return new Endpoint(Endpoint.DEVICE_IPC, b);
    }

    public static ProcessIdentity deadProcess() throws Exception {
        Process p = new ProcessBuilder("true").start();
        p.waitFor();
        return new ProcessIdentity(p.pid(), 1);
    }

    @Test
    void lookupReturnsTheLongestOfferedPrefix() {
        for (int i : new int[] {0, 1, 2, 4}) {
            assertEquals(PublishOutcome.PUBLISHED, registry.publish(offer(i, 10 + i)));
        }
        List<Offer> found = registry.lookupPrefix(keys(6), 6);
        assertEquals(3, found.size());
        assertEquals(offer(0, 10), found.get(0));
        assertEquals(offer(2, 12), found.get(2));
        assertEquals(2, registry.lookupPrefix(keys(6), 2).size());
        assertEquals(0, registry.lookupPrefix(new ChunkKey[] {key(3), key(4)}, 2).size());
    }

    @Test
    void publishedOfferRoundTripsEveryField() {
        Offer o = offer(5, 77);
        registry.publish(o);
        Offer back = registry.lookup(key(5));
        assertEquals(o, back);
        assertEquals(o.owner(), back.owner());
        assertEquals(o.endpoints(), back.endpoints());
    }

    @Test
    void endpointsUpToTheirLimitRoundTripAndLongerOnesAreRejected() {
        byte[] big = new byte[Endpoint.MAX_BYTES];
        for (int i = 0; i < big.length; i++) {
            big[i] = (byte) (i * 7 + 1);
        }
        byte[] rest = new byte[Offer.MAX_ENDPOINT_BYTES - (3 + big.length) - 3];
        java.util.Arrays.fill(rest, (byte) 9);
        List<Endpoint> endpoints = List.of(new Endpoint(Endpoint.DEVICE_IPC, big), new Endpoint(Endpoint.TCP, rest));
        Offer o = new Offer(key(9), 7, ProcessIdentity.current(), endpoints, 0, 4096, 42, 1, clock.get() + 1000);
        registry.publish(o);
        assertEquals(endpoints, registry.lookup(key(9)).endpoints());
        assertTrue(registry.isCurrent(o));
        List<Endpoint> tooMany = List.of(new Endpoint(Endpoint.DEVICE_IPC, big), new Endpoint(Endpoint.TCP, big));
        assertThrows(IllegalArgumentException.class, () -> new Offer(key(9), 7, ProcessIdentity.current(), tooMany,
                0, 4096, 42, 1, clock.get() + 1000));
        assertThrows(IllegalArgumentException.class, () -> new Endpoint(Endpoint.RDMA, new byte[Endpoint.MAX_BYTES + 1]));
        assertThrows(IllegalArgumentException.class, () -> new Offer(key(9), 7, ProcessIdentity.current(),
                List.of(ipc(1), ipc(2)), 0, 4096, 42, 1, clock.get() + 1000), "two endpoints of one kind");
    }

    /**
     * A batch publishes like one publish per offer, in order: fresh keys are published, a live offer is kept (first
     * wins, within the batch too), an expired one or one of a dead owner is replaced.
     */
    @Test
    void publishAllPublishesEachAsPublishWouldInOrder() throws Exception {
        registry.publish(offer(1, 1));
        registry.publish(offer(key(2), deadProcess(), 2, clock.get() + 10_000));
        registry.publish(offer(key(3), ProcessIdentity.current(), 3, clock.get() + 5));
        clock.addAndGet(10);
        List<Offer> batch = List.of(offer(0, 20), offer(1, 21), offer(2, 22), offer(3, 23), offer(4, 24),
                offer(4, 25));
        PublishOutcome[] outcomes = registry.publishAll(batch);
        assertArrayEquals(new PublishOutcome[] {PublishOutcome.PUBLISHED, PublishOutcome.ALREADY_OFFERED,
                PublishOutcome.PUBLISHED, PublishOutcome.PUBLISHED, PublishOutcome.PUBLISHED,
                PublishOutcome.ALREADY_OFFERED}, outcomes);
        assertEquals(List.of(20L, 1L, 22L, 23L, 24L), registry.lookupPrefix(keys(5), 5).stream()
                .map(Offer::generation).toList());
        assertEquals(0, registry.publishAll(List.of()).length);
    }

    /** Each key on its own, gaps or not: served offers, null for absent, expired, or a dead owner's. */
    @Test
    void lookupEachAnswersEveryKeyOnItsOwn() throws Exception {
        Offer zero = offer(0, 10);
        Offer two = offer(2, 12);
        registry.publish(zero);
        registry.publish(two);
        registry.publish(offer(key(3), deadProcess(), 13, clock.get() + 10_000));
        registry.publish(offer(key(4), ProcessIdentity.current(), 14, clock.get() + 5));
        clock.addAndGet(10);
        Offer[] found = registry.lookupEach(List.of(key(0), key(1), key(2), key(3), key(4), key(2)));
        assertEquals(zero, found[0]);
        assertNull(found[1]);
        assertEquals(two, found[2]);
        assertNull(found[3], "a dead owner's");
        assertNull(found[4], "an expired lease");
        assertEquals(two, found[5]);
        assertEquals(0, registry.lookupEach(List.of()).length);
    }

    @Test
    void firstLiveOfferOfAKeyWins() {
        registry.publish(offer(0, 1));
        assertEquals(PublishOutcome.ALREADY_OFFERED, registry.publish(offer(0, 2)));
        assertEquals(1, registry.lookup(key(0)).generation());
    }

    @Test
    void withdrawnOfferIsNotServedAndNotCurrent() {
        Offer o = offer(0, 1);
        registry.publish(o);
        assertEquals(Withdrawal.WITHDRAWN, registry.withdrawIfUnused(o, Long.MAX_VALUE));
        assertNull(registry.lookup(key(0)));
        assertFalse(registry.isCurrent(o));
        assertEquals(Withdrawal.WITHDRAWN, registry.withdrawIfUnused(o, Long.MAX_VALUE),
                "withdrawing what is gone reports gone");
    }

    @Test
    void republishedKeyHasANewGenerationSoOldCopiesAreNotCurrent() {
        Offer old = offer(0, 1);
        registry.publish(old);
        registry.withdraw(old);
        Offer fresh = offer(0, 2);
        registry.publish(fresh);
        assertFalse(registry.isCurrent(old));
        assertTrue(registry.isCurrent(fresh));
    }

    @Test
    void pinnedOfferIsNotWithdrawnUntilReleased() {
        Offer o = offer(0, 1);
        registry.publish(o);
        assertTrue(registry.pin(o, 5_000));
        assertTrue(registry.pin(o, 5_000));
        assertEquals(Withdrawal.PINNED, registry.withdrawIfUnused(o, Long.MAX_VALUE));
        registry.unpin(o);
        assertEquals(Withdrawal.PINNED, registry.withdrawIfUnused(o, Long.MAX_VALUE), "one pin is still held");
        registry.unpin(o);
        assertEquals(Withdrawal.WITHDRAWN, registry.withdrawIfUnused(o, Long.MAX_VALUE));
    }

    @Test
    void offerImportedAfterTheGivenTimeIsKept() {
        Offer o = offer(0, 1);
        registry.publish(o);
        long published = clock.get();
        assertEquals(Withdrawal.WITHDRAWN, registry.withdrawIfUnused(o, published), "never imported");

        Offer again = offer(0, 2);
        registry.publish(again);
        clock.addAndGet(10);
        assertTrue(registry.pin(again, 5_000));
        registry.unpin(again);
        assertEquals(Withdrawal.IMPORTED_SINCE, registry.withdrawIfUnused(again, published + 9));
        assertTrue(registry.isCurrent(again), "kept, and still served");
        assertEquals(Withdrawal.WITHDRAWN, registry.withdrawIfUnused(again, published + 10),
                "not imported after the caller's own use");
    }

    @Test
    void withdrawalsAskedTogetherAreDecidedEachAsAlone() {
        Offer idle = offer(0, 1);
        Offer pinned = offer(1, 1);
        Offer inDemand = offer(2, 1);
        Offer gone = offer(3, 1);
        for (Offer o : List.of(idle, pinned, inDemand, gone)) {
            registry.publish(o);
        }
        long lastOwnUse = clock.get();
        registry.withdraw(gone);
        assertTrue(registry.pin(pinned, 5_000));
        clock.addAndGet(10);
        assertTrue(registry.pin(inDemand, 5_000));
        registry.unpin(inDemand);
        assertArrayEquals(new Withdrawal[] {Withdrawal.WITHDRAWN, Withdrawal.PINNED, Withdrawal.IMPORTED_SINCE,
                Withdrawal.WITHDRAWN}, registry.withdrawIfUnused(List.of(idle, pinned, inDemand, gone),
                new long[] {lastOwnUse, Long.MAX_VALUE, lastOwnUse, lastOwnUse}));
        assertFalse(registry.isCurrent(idle));
        assertTrue(registry.isCurrent(pinned));
        assertTrue(registry.isCurrent(inDemand));
        assertEquals(0, registry.withdrawIfUnused(List.of(), new long[0]).length);
        assertThrows(IllegalArgumentException.class, () -> registry.withdrawIfUnused(List.of(pinned), new long[2]));
        assertTrue(registry.isCurrent(pinned), "a call refused touches nothing");
    }

    @Test
    void pinOfAnImporterThatNeverReleasesLapses() {
        Offer o = offer(0, 1);
        registry.publish(o);
        assertTrue(registry.pin(o, 100));
        assertEquals(Withdrawal.PINNED, registry.withdrawIfUnused(o, Long.MAX_VALUE));
        clock.addAndGet(101);
        assertEquals(Withdrawal.WITHDRAWN, registry.withdrawIfUnused(o, Long.MAX_VALUE));
    }

    @Test
    void forcedWithdrawIgnoresPins() {
        Offer o = offer(0, 1);
        registry.publish(o);
        registry.pin(o, 5_000);
        registry.withdraw(o);
        assertFalse(registry.isCurrent(o));
    }

    @Test
    void pinOfAWithdrawnOfferFails() {
        Offer o = offer(0, 1);
        registry.publish(o);
        registry.withdraw(o);
        assertFalse(registry.pin(o, 1000));
    }

    @Test
    void expiredLeaseIsNotServedUntilRenewed() {
        Offer o = offer(0, 1);
        registry.publish(o);
        clock.addAndGet(10_001);
        assertNull(registry.lookup(key(0)));
        assertTrue(registry.renew(o, clock.get() + 1000));
        assertEquals(1, registry.lookup(key(0)).generation());
        assertEquals(PublishOutcome.ALREADY_OFFERED, registry.publish(offer(0, 2)));
    }

    @Test
    void expiredOfferMakesRoomForANewPublication() {
        registry.publish(offer(0, 1));
        clock.addAndGet(10_001);
        assertEquals(PublishOutcome.PUBLISHED, registry.publish(offer(0, 2)));
        assertEquals(2, registry.lookup(key(0)).generation());
    }

    @Test
    void offersOfADeadProcessAreNotServed() throws Exception {
        ProcessIdentity dead = deadProcess();
        registry.publish(offer(key(0), dead, 1, clock.get() + 10_000));
        assertNull(registry.lookup(key(0)));
        assertEquals(0, registry.lookupPrefix(keys(1), 1).size());
        assertEquals(PublishOutcome.PUBLISHED, registry.publish(offer(0, 2)), "a dead owner's key can be taken over");
    }

    @Test
    void theSameKeyOwnerAndGenerationAtAnotherPlaceIsAnotherPublication() {
        Offer old = Offer.of(key(0), 7, ProcessIdentity.current(), ipc(1), 0, 4096, 42, 5, clock.get() + 1000);
        registry.publish(old);
        registry.withdraw(old);
        Offer elsewhere = Offer.of(key(0), 7, ProcessIdentity.current(), ipc(2), 0, 4096, 42, 5,
                clock.get() + 1000);
        Offer sameBufferOtherSlot = Offer.of(key(0), 7, ProcessIdentity.current(), ipc(1), 8192, 4096, 42, 5,
                clock.get() + 1000);
        registry.publish(elsewhere);
        assertFalse(registry.isCurrent(old), "memory that was reused must never pass the check after a copy");
        assertFalse(registry.isCurrent(sameBufferOtherSlot));
        assertFalse(registry.pin(old, 1000));
        assertFalse(registry.renew(old, clock.get() + 5000));
        registry.withdraw(old);
        assertTrue(registry.isCurrent(elsewhere), "withdrawing the old publication leaves the new one");
    }

    @Test
    void anOfferOfOtherBytesAtTheSamePlaceIsAnotherPublication() {
        Offer o = offer(0, 1);
        registry.publish(o);
        Offer otherLayout = new Offer(o.key(), o.nodeId(), o.owner(), o.endpoints(), o.offset(), o.length(),
                o.layoutFingerprint() + 1, o.generation(), o.leaseExpiryMs());
        Offer otherLength = new Offer(o.key(), o.nodeId(), o.owner(), o.endpoints(), o.offset(), o.length() + 1,
                o.layoutFingerprint(), o.generation(), o.leaseExpiryMs());
        for (Offer other : List.of(otherLayout, otherLength)) {
            assertFalse(other.samePublication(o));
            assertFalse(registry.isCurrent(other));
            assertFalse(registry.pin(other, 1000));
        }
        assertTrue(registry.isCurrent(o));
    }

    @Test
    void pinLeasesAsLongAsTheCallerLikesSaturateInsteadOfOverflowing() {
        Offer o = offer(0, 1);
        registry.publish(o);
        assertTrue(registry.pin(o, Long.MAX_VALUE));
        clock.addAndGet(1_000_000_000L);
        assertEquals(Withdrawal.PINNED, registry.withdrawIfUnused(o, Long.MAX_VALUE));
        assertThrows(IllegalArgumentException.class, () -> registry.pin(o, 0));
        registry.unpin(o);
        assertEquals(Withdrawal.WITHDRAWN, registry.withdrawIfUnused(o, Long.MAX_VALUE));
    }

    @Test
    void batchedPinsChecksAndUnpinsAnswerAsTheSingleOnes() {
        Offer a = offer(0, 1);
        Offer gone = offer(1, 1);
        Offer c = offer(2, 1);
        registry.publish(a);
        registry.publish(gone);
        registry.publish(c);
        registry.withdraw(gone);
        assertArrayEquals(new boolean[] {true, false, true}, registry.pinAll(List.of(a, gone, c), 5_000));
        assertArrayEquals(new boolean[] {true, false, true}, registry.areCurrent(List.of(a, gone, c)));
        assertEquals(Withdrawal.PINNED, registry.withdrawIfUnused(c, Long.MAX_VALUE));
        registry.unpinAll(List.of(a, gone, c));
        assertEquals(Withdrawal.WITHDRAWN, registry.withdrawIfUnused(a, Long.MAX_VALUE));
        assertEquals(Withdrawal.WITHDRAWN, registry.withdrawIfUnused(c, Long.MAX_VALUE));
        assertArrayEquals(new boolean[0], registry.pinAll(List.of(), 5_000));
    }

    /** The check after a copy and the release of its pins in one call answer as areCurrent, then unpinAll. */
    @Test
    void releaseCurrentChecksEachOfferAndReleasesItsPin() {
        Offer a = offer(0, 1);
        Offer replaced = offer(1, 1);
        Offer c = offer(2, 1);
        for (Offer o : List.of(a, replaced, c)) {
            registry.publish(o);
        }
        assertArrayEquals(new boolean[] {true, true, true}, registry.pinAll(List.of(a, replaced, c), 5_000));
        assertTrue(registry.pin(c, 5_000), "a second pin of c, held by another import");
        registry.withdraw(replaced);
        Offer next = offer(1, 2);
        registry.publish(next);
        assertArrayEquals(new boolean[] {true, false, true, false},
                registry.releaseCurrent(List.of(a, replaced, c, offer(3, 1))));
        assertEquals(Withdrawal.WITHDRAWN, registry.withdrawIfUnused(a, Long.MAX_VALUE), "a's pin released");
        assertEquals(Withdrawal.PINNED, registry.withdrawIfUnused(c, Long.MAX_VALUE), "c keeps the other pin");
        assertTrue(registry.isCurrent(next), "the newer publication of the replaced key is untouched");
        assertEquals(Withdrawal.WITHDRAWN, registry.withdrawIfUnused(next, Long.MAX_VALUE), "and holds no pin");
        assertArrayEquals(new boolean[0], registry.releaseCurrent(List.of()));
    }

    @Test
    void renewOfAGonePublicationFails() {
        Offer o = offer(0, 1);
        assertFalse(registry.renew(o, clock.get() + 100));
    }
}
