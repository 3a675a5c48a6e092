package io.kvmarket.registry;

import io.kvmarket.key.ChunkKey;

import java.util.List;

/**
 * Where exporters publish offers and importers find them. Implementations: {@link InProcessRegistry} for one JVM,
 * {@link io.kvmarket.registry.shm.NodeLocalRegistry} for every process of one user on a node.
 *
 * <p>An offer is served while it is published, its lease has not expired and its owner process is alive.
 * Pins are leases too: a pinned offer is not withdrawn by its exporter's pool until every pin is released or
 * has expired, so an importer that dies never holds memory for longer than its pin lease.
 *
 * <p>Methods may throw {@link RegistryException} when the registry itself fails; the marketplace turns that
 * into a miss on import and a skipped export.
 */
public interface OfferRegistry extends AutoCloseable {

    /** Publishes an offer unless a live offer for its key exists. */
    PublishOutcome publish(Offer offer);

    /**
     * {@link #publish} of each offer, in order; an entry is null where the registry failed and the outcome is unknown
     * (the write may still land). A registry across the network answers in a few round trips, not one per offer.
     */
    default PublishOutcome[] publishAll(List<Offer> offers) {
        PublishOutcome[] outcomes = new PublishOutcome[offers.size()];
        for (int i = 0; i < outcomes.length; i++) {
            try {
                outcomes[i] = publish(offers.get(i));
            } catch (RegistryException e) {
                outcomes[i] = null;
            }
        }
        return outcomes;
    }

    /**
     * The served offers for {@code keys[0..k)} with k as large as possible (and at most {@code maxChunks}): the
     * lookup stops at the first key that has no served offer.
     */
    List<Offer> lookupPrefix(ChunkKey[] keys, int maxChunks);

    /** The served offer for one key, or null. */
    Offer lookup(ChunkKey key);

    /**
     * {@link #lookup} of each key, in order, null where none is served; a registry across the network answers in one
     * round trip.
     */
    default Offer[] lookupEach(List<ChunkKey> keys) {
        Offer[] found = new Offer[keys.size()];
        for (int i = 0; i < found.length; i++) {
            found[i] = lookup(keys.get(i));
        }
        return found;
    }

    /**
     * Pins the offer until released or until {@code leaseMs} from now; a lease past the end of the clock holds
     * until released.
     *
     * @return false when that publication is no longer in the registry (nothing was pinned)
     * @throws IllegalArgumentException when {@code leaseMs} is not positive
     */
    boolean pin(Offer offer, long leaseMs);

    /** Releases one pin taken with {@link #pin}. A no-op when the publication is gone. */
    void unpin(Offer offer);

    /** True while this exact publication ({@link Offer#samePublication}) is still in the registry. */
    boolean isCurrent(Offer offer);

    /**
     * {@link #pin} of each offer, in order, false where it failed (the registry's failure included); a registry
     * across the network answers them in one round trip.
     */
    default boolean[] pinAll(List<Offer> offers, long leaseMs) {
        boolean[] pinned = new boolean[offers.size()];
        for (int i = 0; i < pinned.length; i++) {
            try {
                pinned[i] = pin(offers.get(i), leaseMs);
            } catch (RegistryException e) {
                pinned[i] = false;
            }
        }
        return pinned;
    }

    /** {@link #unpin} of each offer; a registry across the network does it in one round trip. */
    default void unpinAll(List<Offer> offers) {
        offers.forEach(this::unpin);
    }

    /** {@link #isCurrent} of each offer, in order; a registry across the network answers in one round trip. */
    default boolean[] areCurrent(List<Offer> offers) {
        boolean[] current = new boolean[offers.size()];
        for (int i = 0; i < current.length; i++) {
            current[i] = isCurrent(offers.get(i));
        }
        return current;
    }

    /**
     * The check after a load's copy and the release of its pins in one: {@link #isCurrent} of each offer, then
     * {@link #unpin} of each; a registry across the network does both in one round trip, each offer's check and
     * release at once. The pins are released whether or not the check could be made; those the registry could not
     * release lapse with their lease.
     *
     * @throws RegistryException when the check failed: nothing is proven current
     */
    default boolean[] releaseCurrent(List<Offer> offers) {
        boolean[] current;
        try {
            current = areCurrent(offers);
        } catch (RuntimeException checkFailed) {
            try {
                unpinAll(offers);
            } catch (RuntimeException unpinFailed) {
                checkFailed.addSuppressed(unpinFailed);
            }
            throw checkFailed;
        }
        try {
            unpinAll(offers);
        } catch (RegistryException e) {
            // the pins lapse with their lease; the check's answer stands
        }
        return current;
    }

    /**
     * Withdraws this publication unless it is pinned, or an importer pinned it after {@code usedSinceMs} (on
     * {@link #clockMillis}). An exporter's pool passes the time it last used the chunk itself: imports by other
     * processes never reach its own recency order, and a chunk they keep importing should not be evicted as if
     * idle. {@code Long.MAX_VALUE} withdraws anything unpinned.
     */
    Withdrawal withdrawIfUnused(Offer offer, long usedSinceMs);

    /**
     * {@link #withdrawIfUnused(Offer, long)} of each offer with its own {@code usedSinceMs}, in order: an exporter's
     * pool evicting several chunks at once; a registry across the network answers in one round trip. An element is
     * null where that withdrawal failed and its outcome is unknown (the offer may still be served).
     *
     * @throws RegistryException when none could even be asked
     */
    default Withdrawal[] withdrawIfUnused(List<Offer> offers, long[] usedSinceMs) {
        if (offers.size() != usedSinceMs.length) {
            throw new IllegalArgumentException(offers.size() + " offers, " + usedSinceMs.length + " times");
        }
        Withdrawal[] out = new Withdrawal[offers.size()];
        for (int i = 0; i < out.length; i++) {
            try {
                out[i] = withdrawIfUnused(offers.get(i), usedSinceMs[i]);
            } catch (RegistryException e) {
                out[i] = null;
            }
        }
        return out;
    }

    /** Withdraws this publication even if pinned (its owner is leaving). A no-op when it is gone. */
    void withdraw(Offer offer);

    /** The clock, in ms, that stamps leases and pins: the wall clock unless a test gave the registry its own. */
    long clockMillis();

    /** {@code nowMs + leaseMs}, or {@link Long#MAX_VALUE} where that would overflow; checks the lease is positive. */
    static long expiry(long nowMs, long leaseMs) {
        if (leaseMs <= 0) {
            throw new IllegalArgumentException("lease must be positive, was " + leaseMs + " ms");
        }
        return nowMs > Long.MAX_VALUE - leaseMs ? Long.MAX_VALUE : nowMs + leaseMs;
    }

    /** Extends the lease of this publication. @return false when it is no longer in the registry */
    boolean renew(Offer offer, long leaseExpiryMs);

    @Override
    void close();
}
