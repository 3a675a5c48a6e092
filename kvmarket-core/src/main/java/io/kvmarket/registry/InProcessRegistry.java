package io.kvmarket.registry;

import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.LivenessCache;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.LongSupplier;

/** A registry inside one JVM: a concurrent map. Lookups are lock-free; writers race only per key. */
public final class InProcessRegistry implements OfferRegistry {

    private final ConcurrentHashMap<ChunkKey, Entry> entries = new ConcurrentHashMap<>();
    private final LivenessCache liveness = new LivenessCache(250_000_000L);
    private final LongSupplier clockMs;

    public InProcessRegistry() {
        this(System::currentTimeMillis);
    }

    /** With a clock, so tests can move time past leases. */
    public InProcessRegistry(LongSupplier clockMs) {
        this.clockMs = clockMs;
    }

    @Override
    public PublishOutcome publish(Offer offer) {
        long now = clockMs.getAsLong();
        Entry fresh = new Entry(offer);
        Entry result = entries.compute(offer.key(), (k, old) -> old != null && served(old, now) ? old : fresh);
        return result == fresh ? PublishOutcome.PUBLISHED : PublishOutcome.ALREADY_OFFERED;
    }

    @Override
    public List<Offer> lookupPrefix(ChunkKey[] keys, int maxChunks) {
        long now = clockMs.getAsLong();
        int limit = Math.min(keys.length, maxChunks);
        List<Offer> found = new ArrayList<>(limit);
        for (int i = 0; i < limit; i++) {
            Entry e = entries.get(keys[i]);
            if (e == null || !served(e, now)) {
                break;
            }
            found.add(e.offer);
        }
        return found;
    }

    @Override
    public Offer lookup(ChunkKey key) {
        Entry e = entries.get(key);
        return e != null && served(e, clockMs.getAsLong()) ? e.offer : null;
    }

    @Override
    public boolean pin(Offer offer, long leaseMs) {
        long now = clockMs.getAsLong();
        long expiry = OfferRegistry.expiry(now, leaseMs);
        Entry e = current(offer);
        if (e == null) {
            return false;
        }
        synchronized (e) {
            e.pins++;
            e.pinExpiryMs = Math.max(e.pinExpiryMs, expiry);
            e.lastPinMs = Math.max(e.lastPinMs, now);
        }
        return isCurrent(offer);
    }

    @Override
    public void unpin(Offer offer) {
        Entry e = current(offer);
        if (e != null) {
            synchronized (e) {
                e.pins = Math.max(0, e.pins - 1);
            }
        }
    }

    @Override
    public long clockMillis() {
        return clockMs.getAsLong();
    }

    @Override
    public boolean isCurrent(Offer offer) {
        return current(offer) != null;
    }

    @Override
    public Withdrawal withdrawIfUnused(Offer offer, long usedSinceMs) {
        Entry e = current(offer);
        if (e == null) {
            return Withdrawal.WITHDRAWN;
        }
        synchronized (e) {
            if (e.pins > 0 && e.pinExpiryMs > clockMs.getAsLong()) {
                return Withdrawal.PINNED;
            }
            if (e.lastPinMs > usedSinceMs) {
                return Withdrawal.IMPORTED_SINCE;
            }
            entries.remove(offer.key(), e);
            return Withdrawal.WITHDRAWN;
        }
    }

    @Override
    public void withdraw(Offer offer) {
        Entry e = current(offer);
        if (e != null) {
            entries.remove(offer.key(), e);
        }
    }

    @Override
    public boolean renew(Offer offer, long leaseExpiryMs) {
        Entry e = current(offer);
        if (e == null) {
            return false;
        }
        e.leaseExpiryMs = leaseExpiryMs;
        return true;
    }

    /** Offers held, served or not; for tests and metrics. */
    public int size() {
        return entries.size();
    }

    @Override
    public void close() {
        entries.clear();
    }

    private Entry current(Offer offer) {
        Entry e = entries.get(offer.key());
        return e != null && e.offer.samePublication(offer) ? e : null;
    }

    private boolean served(Entry e, long nowMs) {
        return e.leaseExpiryMs > nowMs && liveness.isAlive(e.offer.owner());
    }

    private static final class Entry {
        final Offer offer;
        volatile long leaseExpiryMs;
        int pins;
        long pinExpiryMs;
        long lastPinMs;

        Entry(Offer offer) {
            this.offer = offer;
            this.leaseExpiryMs = offer.leaseExpiryMs();
        }
    }
}
