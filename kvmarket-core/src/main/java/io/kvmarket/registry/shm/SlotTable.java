package io.kvmarket.registry.shm;

import io.kvmarket.key.ChunkKey;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.shm.SlotCodec.SlotView;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.lang.invoke.VarHandle;
import java.util.ArrayList;
import java.util.List;

import static io.kvmarket.registry.shm.RegistryFileDescriptor.STATE_EMPTY;
import static io.kvmarket.registry.shm.RegistryFileDescriptor.STATE_LIVE;
import static io.kvmarket.registry.shm.RegistryFileDescriptor.STATE_TOMBSTONE;

/**
 * The open-addressing hash table in the registry file: one probe sequence for every operation, the header's
 * counters kept in step with the slots, tombstones compacted away, and a slot left half-written by a killed
 * writer repaired. Lookups run without the lock; everything that writes runs under the file lock.
 */
final class SlotTable {

    private static final Logger LOG = LoggerFactory.getLogger(SlotTable.class);
    /** {@link #probeForPublish}: a served entry already holds the key. */
    static final long TAKEN = -2;
    /** {@link #probeForPublish}: no slot is free. */
    static final long FULL = -1;

    /** Which entries the registry serves (lease, owner alive, fields well formed): its policy, not the table's. */
    interface Served {
        boolean test(SlotView v, long nowMs);
    }

    private final RegistryFile file;
    private final SlotCodec slots;
    private final long capacity;
    private final long mask;

    SlotTable(RegistryFile file, SlotCodec slots) {
        this.file = file;
        this.slots = slots;
        this.capacity = file.capacity();
        this.mask = capacity - 1;
    }

    /** The live slot of {@code key}, its consistent contents left in {@code v}; -1 when absent. No lock. */
    long find(ChunkKey key, SlotView v) {
        long home = key.lo() & mask;
        for (long probe = 0; probe < capacity; probe++) {
            long slot = (home + probe) & mask;
            if (!slots.readConsistent(slot, v)) {
                continue; // being written right now: treat as not this key; at worst a miss
            }
            if (v.state == STATE_EMPTY) {
                return -1;
            }
            if (v.state == STATE_LIVE && v.hasKey(key)) {
                return slot;
            }
        }
        return -1;
    }

    /** The slot of this exact publication ({@link Offer#samePublication}), or -1. No lock. */
    long findPublication(Offer offer, SlotView v) {
        long slot = find(offer.key(), v);
        return slot >= 0 && v.isPublication(offer) ? slot : -1;
    }

    // ---- under the file lock

    /**
     * As {@link #findPublication}, for a writer holding the lock: a slot whose sequence is odd is then no writer at
     * work but one that died or a damaged word, and it must be found and rewritten, not taken for absent (a
     * withdrawal that missed it would report the memory free while the offer can come back).
     */
    long findPublicationLocked(Offer offer, SlotView v) {
        long home = offer.key().lo() & mask;
        for (long probe = 0; probe < capacity; probe++) {
            long slot = (home + probe) & mask;
            slots.readLocked(slot, v);
            if (v.state == STATE_EMPTY) {
                return -1;
            }
            if (v.state == STATE_LIVE && v.hasKey(offer.key())) {
                return v.isPublication(offer) ? slot : -1;
            }
        }
        return -1;
    }

    /**
     * Where {@code key} may be published: a free slot, {@link #TAKEN} when a served entry holds the key, or
     * {@link #FULL}. Unserved entries met on the way are tombstoned, so their slots are free.
     */
    long probeForPublish(ChunkKey key, long nowMs, Served served, SlotView v) {
        long free = FULL;
        long home = key.lo() & mask;
        for (long probe = 0; probe < capacity; probe++) {
            long slot = (home + probe) & mask;
            slots.readLocked(slot, v);
            if (v.state == STATE_EMPTY) {
                return free >= 0 ? free : slot;
            }
            // Tombstones, unserved offers and slots in no known state (damaged) are all free to take.
            if (v.state != STATE_LIVE || !served.test(v, nowMs)) {
                if (v.state != STATE_TOMBSTONE) {
                    tombstone(slot);
                }
                if (free < 0) {
                    free = slot;
                }
            } else if (v.hasKey(key)) {
                return TAKEN;
            }
        }
        return free;
    }

    /** Writes a live offer, with no pins, into a free slot. */
    void writeLive(long slot, Offer offer) {
        writeLive(slot, offer, 0, 0, 0);
    }

    private void writeLive(long slot, Offer offer, long pinCount, long pinExpiry, long lastPin) {
        beginWrite(slot);
        long oldState = slots.state(slot);
        slots.putLive(slot, offer, pinCount, pinExpiry, lastPin);
        slots.endWrite(slot);
        file.adjustLive(1);
        if (oldState == STATE_TOMBSTONE) {
            file.adjustTombstones(-1);
        }
    }

    void tombstone(long slot) {
        beginWrite(slot);
        finishAsTombstone(slot);
    }

    /** Makes the slot odd and names it in the header, so a writer killed anywhere after this is repaired. */
    void beginWrite(long slot) {
        file.setDirtySlot(slot);
        slots.beginWrite(slot);
    }

    /** Ends a write begun on {@code slot} by turning it into a tombstone. */
    void finishAsTombstone(long slot) {
        long oldState = slots.state(slot);
        slots.putState(slot, STATE_TOMBSTONE);
        slots.endWrite(slot);
        if (oldState == STATE_LIVE) {
            file.adjustLive(-1);
        }
        if (oldState != STATE_TOMBSTONE) {
            file.adjustTombstones(1);
        }
    }

    /** Tombstones every live entry {@code served} rejects, and every slot in no known state. */
    void sweep(long nowMs, Served served, SlotView v) {
        for (long slot = 0; slot < capacity; slot++) {
            slots.readLocked(slot, v);
            boolean known = v.state == STATE_EMPTY || v.state == STATE_LIVE || v.state == STATE_TOMBSTONE;
            if (!known || v.state == STATE_LIVE && !served.test(v, nowMs)) {
                tombstone(slot);
            }
        }
    }

    /**
     * Live slots stay under 3/4 and tombstones under 1/8, so an eighth of the table stays empty and every probe
     * sequence ends soon: past that, the table is rewritten without tombstones.
     */
    void compactIfNeeded(long nowMs, Served served) {
        if (file.tombstones() > capacity / 8) {
            rebuild(nowMs, served);
        }
    }

    /**
     * Rewrites the table without tombstones and unserved entries. Each slot is emptied in the same write that reads
     * its pins, so a pin is either carried over or fails its own sequence check; readers meanwhile may miss, never
     * mismatch. The file says a rewrite is under way until it ends: a writer killed halfway left entries behind
     * emptied slots where no probe finds them, and the next writer rewrites the table before anything is published
     * beside them ({@link #repairAfterKilledWriter}).
     */
    private void rebuild(long nowMs, Served served) {
        file.setRebuilding(true);
        List<Offer> offers = new ArrayList<>();
        List<long[]> pins = new ArrayList<>();
        SlotView v = new SlotView();
        for (long slot = 0; slot < capacity; slot++) {
            if (slots.state(slot) == STATE_EMPTY) {
                continue;
            }
            slots.readLocked(slot, v);
            beginWrite(slot);
            VarHandle.fullFence();
            if (v.state == STATE_LIVE && served.test(v, nowMs)) {
                offers.add(v.toOffer());
                pins.add(new long[] {slots.pinCount(slot), slots.pinExpiry(slot), slots.lastPin(slot)});
            }
            slots.putState(slot, STATE_EMPTY);
            slots.endWrite(slot);
        }
        file.setCounters(0, 0);
        for (int i = 0; i < offers.size(); i++) {
            Offer o = offers.get(i);
            long home = o.key().lo() & mask;
            for (long probe = 0; probe < capacity; probe++) {
                long slot = (home + probe) & mask;
                if (slots.state(slot) == STATE_EMPTY) {
                    writeLive(slot, o, pins.get(i)[0], pins.get(i)[1], pins.get(i)[2]);
                    break;
                }
            }
        }
        file.setRebuilding(false);
        LOG.debug("registry {} rebuilt with {} live offers", file.path(), offers.size());
    }

    /**
     * A writer killed inside its locked section left the slot it was writing named in the header: that slot, if
     * still odd, becomes a tombstone, and the counters are recounted since the kill may have come between a slot's
     * write and its counter update. A writer killed while it rewrote the table is followed by a whole rewrite, which
     * brings every entry left behind an emptied slot back where probes find it (the offers it held only in its
     * memory are gone; their owners publish them again).
     */
    void repairAfterKilledWriter(long nowMs, Served served) {
        long dirty = file.dirtySlot();
        if (dirty >= 0 && dirty < capacity) {
            if ((slots.seq(dirty) & 1) != 0) {
                LOG.warn("registry slot {} was left half-written by a killed process; repairing", dirty);
                slots.putState(dirty, STATE_TOMBSTONE);
                slots.endWrite(dirty);
            }
            recount();
            file.setDirtySlot(-1);
        }
        if (file.rebuilding()) {
            LOG.warn("registry {} was left half-rewritten by a killed process; rewriting it", file.path());
            rebuild(nowMs, served);
        }
    }

    /** Counters out of any possible range were damaged by some process of the user: recount rather than act on them. */
    void checkCounters() {
        long live = file.live();
        long tomb = file.tombstones();
        if (live < 0 || tomb < 0 || live > capacity - tomb) {
            LOG.warn("registry {} had impossible counters ({} live, {} tombstones of {} slots); recounting",
                    file.path(), live, tomb, capacity);
            recount();
        }
    }

    void recount() {
        long live = 0;
        long tomb = 0;
        for (long slot = 0; slot < capacity; slot++) {
            long state = slots.state(slot);
            live += state == STATE_LIVE ? 1 : 0;
            tomb += state == STATE_TOMBSTONE ? 1 : 0;
        }
        file.setCounters(live, tomb);
    }
}
