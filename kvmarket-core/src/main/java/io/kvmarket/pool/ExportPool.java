package io.kvmarket.pool;

import io.kvmarket.device.Device;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.registry.PublishOutcome;
import io.kvmarket.registry.RegistryException;
import io.kvmarket.registry.Withdrawal;
import io.kvmarket.transfer.ServedPool;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.SplittableRandom;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.ReentrantLock;
import java.util.function.Supplier;

/**
 * Device memory owned by the marketplace, cut into fixed chunk slots, that holds exported chunks so the engine
 * may reuse its own blocks at once. Bounded by a byte budget; when full it evicts the least recently used
 * published chunk that no importer has pinned, and always <b>withdraws the offer before the memory is reused</b>.
 * Recency counts imports by other processes too: the registry records each pin's time, and a chunk imported since
 * this pool last used it gets a second chance: it moves to the recent end, and goes only when every other
 * candidate is pinned or in demand as well. A chunk a transport {@linkplain #hold holds} while it streams it is
 * neither evicted nor reused, and a pool closed meanwhile frees its memory when the last hold ends.
 * Thread-safe.
 */
public final class ExportPool implements ServedPool, AutoCloseable {

    private static final Logger LOG = LoggerFactory.getLogger(ExportPool.class);
    /**
     * Process-wide: every pool of a process publishes as the same owner, so a generation must be unique per process
     * for its whole life, however many marketplaces, pools or devices it runs. Seeded at random so that copies of
     * this class in other class loaders of the process draw from ranges that never meet.
     */
    private static final AtomicLong GENERATIONS = new AtomicLong(new SplittableRandom().nextLong() >>> 2);

    private final Device device;
    private final OfferRegistry registry;
    private final long chunkBytes;
    private final int slots;
    private final DeviceBuffer buffer;
    private final ArrayDeque<Integer> free = new ArrayDeque<>();
    /** Published slots in least-recently-used order. */
    private final LinkedHashMap<Integer, Offer> published = new LinkedHashMap<>(16, 0.75f, true);
    private final Map<ChunkKey, Integer> slotOfKey = new HashMap<>();
    /** When this pool last published or touched each slot's chunk, in ms on the registry's clock. */
    private final long[] lastUsedMs;
    /** Transports streaming each slot's chunk now: a held slot is neither evicted nor handed out. */
    private final int[] holds;
    private int heldSlots;
    /** Memory holds open, and what each asked to run when the pool closes. */
    private final Map<Object, Runnable> memoryHolds = new HashMap<>();
    private long evictions;
    private boolean closed;
    /** Set when close() left the memory to the last hold to free. */
    private boolean freeWhenUnheld;
    /** Set when an offer of this pool could not be withdrawn: freeing the memory could then serve reused bytes. */
    private boolean offerMayOutliveMemory;
    /** Guards the slot maps; held across registry withdraws while evicting, so {@link #touch} only tries it. */
    private final ReentrantLock lock = new ReentrantLock();

    public ExportPool(Device device, OfferRegistry registry, long budgetBytes, long chunkBytes) {
        if (chunkBytes <= 0 || budgetBytes < chunkBytes) {
            throw new IllegalArgumentException("pool budget " + budgetBytes + " holds no chunk of " + chunkBytes + " bytes");
        }
        long count = budgetBytes / chunkBytes;
        if (count > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("pool of " + count + " chunks is too many slots");
        }
        this.device = device;
        this.registry = registry;
        this.chunkBytes = chunkBytes;
        this.slots = (int) count;
        this.lastUsedMs = new long[slots];
        this.holds = new int[slots];
        this.buffer = device.allocate(count * chunkBytes);
        for (int i = 0; i < slots; i++) {
            free.add(i);
        }
    }

    @Override
    public DeviceBuffer buffer() {
        return buffer;
    }

    public long chunkBytes() {
        return chunkBytes;
    }

    public int capacityChunks() {
        return slots;
    }

    /** A generation no other publication of this process has had or will have. */
    public static long nextGeneration() {
        return GENERATIONS.incrementAndGet();
    }

    /**
     * Reserves up to {@code wanted} chunks of the pool for filling, evicting unpinned published chunks as needed
     * (offer withdrawn first). Holds fewer when the rest are pinned or being filled. Close the reservation when
     * done: what was not {@linkplain Reservation#published published} returns to the pool.
     */
    public Reservation reserve(int wanted) {
        if (wanted < 0) {
            throw new IllegalArgumentException("cannot reserve " + wanted + " chunks");
        }
        return new Reservation(reserveSlots(wanted));
    }

    private int[] reserveSlots(int wanted) {
        return locked(() -> {
            if (closed) {
                throw new IllegalStateException("export pool is closed: its memory is freed");
            }
            int[] got = new int[wanted];
            int n = 0;
            for (Iterator<Integer> it = free.iterator(); n < wanted && it.hasNext(); ) {
                int slot = it.next();
                if (holds[slot] == 0) { // a slot freed while a transport streams its old chunk waits for it
                    it.remove();
                    got[n++] = slot;
                }
            }
            if (n == wanted) {
                return got;
            }
            // Least recently used first (copied out: a get would reorder them), each pass asking the registry about
            // as many as are still wanted, in one call.
            List<Map.Entry<Integer, Offer>> idle = new ArrayList<>();
            for (Map.Entry<Integer, Offer> e : published.entrySet()) {
                if (holds[e.getKey()] == 0) {
                    idle.add(Map.entry(e.getKey(), e.getValue()));
                }
            }
            List<Map.Entry<Integer, Offer>> importedElsewhere = new ArrayList<>();
            n = evict(idle, false, importedElsewhere, got, n);
            long now = registry.clockMillis();
            for (Map.Entry<Integer, Offer> e : importedElsewhere) {
                lastUsedMs[e.getKey()] = now;
                published.get(e.getKey()); // to the recent end
            }
            // Every other candidate was pinned: the second chance runs out, least recently used first.
            n = evict(importedElsewhere, true, null, got, n);
            return n == wanted ? got : Arrays.copyOf(got, n);
        });
    }

    /**
     * Withdraws the offers of {@code candidates} (slot and offer), in order, until {@code got} is full, as many at a
     * time as are still wanted; the slots withdrawn go to {@code got} from {@code n}. Without {@code ignoreUse}, a
     * chunk imported elsewhere since this pool last used it is kept and added to {@code importedSince}.
     *
     * @return the slots in {@code got} now
     */
    private int evict(List<Map.Entry<Integer, Offer>> candidates, boolean ignoreUse,
                      List<Map.Entry<Integer, Offer>> importedSince, int[] got, int n) {
        for (int next = 0; n < got.length && next < candidates.size(); ) {
            List<Map.Entry<Integer, Offer>> batch =
                    candidates.subList(next, Math.min(candidates.size(), next + got.length - n));
            next += batch.size();
            List<Offer> offers = new ArrayList<>(batch.size());
            long[] usedSince = new long[batch.size()];
            for (int i = 0; i < batch.size(); i++) {
                offers.add(batch.get(i).getValue());
                usedSince[i] = ignoreUse ? Long.MAX_VALUE : lastUsedMs[batch.get(i).getKey()];
            }
            Withdrawal[] outcomes = withdraw(offers, usedSince);
            for (int i = 0; i < outcomes.length; i++) {
                int slot = batch.get(i).getKey();
                if (outcomes[i] == Withdrawal.WITHDRAWN) {
                    published.remove(slot);
                    evicted(slot, offers.get(i));
                    got[n++] = slot;
                } else if (outcomes[i] == Withdrawal.IMPORTED_SINCE && importedSince != null) {
                    importedSince.add(batch.get(i));
                }
            }
        }
        return n;
    }

    /**
     * The registry's outcome for each offer; unknown (null) where it failed or answered something else than one
     * outcome per offer. An unknown outcome keeps the chunk's memory, as a pin would: the offer may still be served.
     */
    private Withdrawal[] withdraw(List<Offer> offers, long[] usedSinceMs) {
        Withdrawal[] outcomes;
        try {
            outcomes = registry.withdrawIfUnused(offers, usedSinceMs);
        } catch (RegistryException ex) {
            LOG.warn("cannot withdraw {} offers for eviction: {}", offers.size(), ex.getMessage());
            outcomes = null;
        }
        if (outcomes == null || outcomes.length != offers.size()) {
            outcomes = new Withdrawal[offers.size()];
        }
        if (closed) { // closed from within the registry's call (its thread holds this lock): the memory is freed
            throw new IllegalStateException("export pool closed while evicting: its memory is freed");
        }
        for (int i = 0; i < outcomes.length; i++) {
            if (outcomes[i] == null) {
                LOG.warn("cannot withdraw {} for eviction, keeping its memory", offers.get(i));
            }
        }
        return outcomes;
    }

    private void evicted(int slot, Offer o) {
        slotOfKey.remove(o.key(), slot); // only this slot's: the key may since be held by another slot
        evictions++;
    }

    /**
     * Chunks of the pool reserved for one export. Each is filled, then either {@linkplain #published published}
     * or returned to the pool when the reservation closes. Not thread-safe: one export uses it.
     */
    public final class Reservation implements AutoCloseable {

        private final int[] slots;
        private final boolean[] settled;

        private Reservation(int[] slots) {
            this.slots = slots;
            this.settled = new boolean[slots.length];
        }

        /** Chunks held: at most the number wanted. */
        public int size() {
            return slots.length;
        }

        /** Byte offset of reserved chunk {@code i} in the pool's buffer. */
        public long offset(int i) {
            return slots[i] * chunkBytes;
        }

        /**
         * Records that reserved chunk {@code i} now holds the published {@code offer}, as the most recently used.
         *
         * @throws IllegalStateException when chunk {@code i} was published already, or the reservation is closed
         */
        public void published(int i, Offer offer) {
            if (settled[i]) {
                throw new IllegalStateException("reserved chunk " + i + " was already published or returned");
            }
            settled[i] = true;
            int slot = slots[i];
            locked(() -> {
                lastUsedMs[slot] = registry.clockMillis();
                published.put(slot, offer);
                return slotOfKey.put(offer.key(), slot);
            });
        }

        /** Returns every reserved chunk that was not published. */
        @Override
        public void close() {
            locked(() -> {
                for (int i = 0; i < slots.length; i++) {
                    if (!settled[i]) {
                        settled[i] = true;
                        free.add(slots[i]);
                    }
                }
                return null;
            });
        }
    }

    /**
     * Marks a chunk this pool holds as recently used. Best effort: the import path never waits for an export
     * that holds the pool while it evicts.
     */
    public void touch(ChunkKey key) {
        if (lock.tryLock()) {
            try {
                Integer slot = slotOfKey.get(key);
                if (slot != null) {
                    lastUsedMs[slot] = registry.clockMillis();
                    published.get(slot);
                }
            } finally {
                lock.unlock();
            }
        }
    }

    /**
     * Holds the chunk a transport is about to stream, when this pool publishes exactly that publication there
     * now; counts as a use of it, as an import on the node does.
     */
    @Override
    public Hold hold(ChunkKey key, long generation, long offset, long length) {
        if (length != chunkBytes || offset < 0 || offset % chunkBytes != 0 || offset / chunkBytes >= slots) {
            return null;
        }
        int slot = (int) (offset / chunkBytes);
        return locked(() -> {
            Offer o = closed ? null : published.get(slot);
            if (o == null || !o.key().equals(key) || o.generation() != generation) {
                return null;
            }
            lastUsedMs[slot] = registry.clockMillis();
            if (holds[slot]++ == 0) {
                heldSlots++;
            }
            return new SlotHold(slot);
        });
    }

    @Override
    public Hold holdMemory(Runnable onClose) {
        Objects.requireNonNull(onClose, "onClose");
        return locked(() -> {
            if (closed) {
                return null;
            }
            Object token = new Object();
            memoryHolds.put(token, onClose);
            return () -> locked(() -> {
                if (memoryHolds.remove(token) != null) {
                    freeIfUnheld();
                }
                return null;
            });
        });
    }

    /** Under the lock: the last hold of a closed pool frees its memory. */
    private void freeIfUnheld() {
        if (freeWhenUnheld && heldSlots == 0 && memoryHolds.isEmpty()) {
            freeWhenUnheld = false;
            freeQuietly();
        }
    }

    @Override
    public boolean isClosed() {
        return locked(() -> closed);
    }

    private final class SlotHold implements Hold {
        private final int slot;
        private boolean released;

        SlotHold(int slot) {
            this.slot = slot;
        }

        @Override
        public void close() {
            locked(() -> {
                if (!released) {
                    released = true;
                    if (--holds[slot] == 0) {
                        heldSlots--;
                        freeIfUnheld();
                    }
                }
                return null;
            });
        }
    }

    /** The offers this pool has published, for lease renewal. */
    public List<Offer> publishedOffers() {
        return locked(() -> new ArrayList<>(published.values()));
    }

    /** The publication this pool holds for {@code key}, or null. */
    public Offer held(ChunkKey key) {
        return locked(() -> {
            Integer slot = slotOfKey.get(key);
            return slot == null ? null : published.get(slot);
        });
    }

    /**
     * Offers again, with a new lease, a publication the registry no longer holds although this pool still does (the
     * registry lost it: a Redis restarted empty). Under the pool's lock, so a chunk evicted meanwhile, whose memory
     * may already hold another chunk, is never offered again.
     *
     * @return true when it is offered (again, or still: never forgotten while the registry holds this very
     *         publication); false when the pool no longer holds it, or another publication holds the key now (the
     *         pool then forgets it and frees the slot)
     */
    public boolean republish(Offer offer, long leaseExpiryMs) {
        return locked(() -> {
            for (Map.Entry<Integer, Offer> e : published.entrySet()) {
                if (e.getValue().samePublication(offer)) {
                    Offer again = new Offer(offer.key(), offer.nodeId(), offer.owner(), offer.endpoints(),
                            offer.offset(), offer.length(), offer.layoutFingerprint(), offer.generation(),
                            leaseExpiryMs);
                    if (registry.publish(again) == PublishOutcome.PUBLISHED) {
                        e.setValue(again);
                        return true;
                    }
                    if (registry.isCurrent(offer)) {
                        return true; // offered already as this very publication (a racing export of this pool)
                    }
                    // Another process offers the key now: this chunk is no longer offered, its memory is free.
                    published.remove(e.getKey());
                    slotOfKey.remove(offer.key(), e.getKey());
                    free.add(e.getKey());
                    return false;
                }
            }
            return false;
        });
    }

    public long evictions() {
        return locked(() -> evictions);
    }

    public int publishedChunks() {
        return locked(published::size);
    }

    private <T> T locked(Supplier<T> body) {
        lock.lock();
        try {
            return body.get();
        } finally {
            lock.unlock();
        }
    }

    /**
     * Withdraws every offer, pinned or not since the owner is leaving, then frees the memory, or leaves that to the
     * last hold when a transport still streams from it. An importer still copying fails its generation check and
     * reports a miss. When an offer cannot be withdrawn the memory is kept (until the process exits) rather than
     * freed under a live offer.
     */
    @Override
    public void close() {
        List<Runnable> onClose;
        lock.lock();
        try {
            if (closed) {
                return;
            }
            closed = true;
            onClose = new ArrayList<>(memoryHolds.values());
            if (!withdrawAll()) {
                LOG.warn("export pool memory kept until exit: some offers of it could not be withdrawn");
            } else if (heldSlots > 0 || !memoryHolds.isEmpty()) {
                freeWhenUnheld = true;
            } else {
                device.free(buffer);
            }
        } finally {
            lock.unlock();
        }
        for (Runnable r : onClose) {
            try {
                r.run();
            } catch (RuntimeException e) {
                LOG.warn("a transport failed to let go of the closed export pool: {}", e.toString());
            }
        }
    }

    /** The last hold of a closed pool frees it: the transport's thread must not die of a device closed meanwhile. */
    private void freeQuietly() {
        try {
            device.free(buffer);
        } catch (RuntimeException e) {
            LOG.warn("cannot free the closed export pool's memory after its last transfer: {}", e.toString());
        }
    }

    /**
     * Withdraws every offer of this pool, pinned or not, and forgets them; the memory stays allocated.
     *
     * @return false when some offer of this pool, now or in an earlier call, could not be withdrawn (the registry
     *         failed): its memory must then stay allocated, since the offer may still be served
     */
    public boolean withdrawAll() {
        return locked(() -> {
            for (Offer o : published.values()) {
                try {
                    registry.withdraw(o);
                } catch (RegistryException e) {
                    offerMayOutliveMemory = true;
                    LOG.warn("cannot withdraw {} on close: {}", o, e.getMessage());
                }
            }
            published.clear();
            slotOfKey.clear();
            return !offerMayOutliveMemory;
        });
    }
}
