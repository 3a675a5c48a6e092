package io.kvmarket.registry.shm;

import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;

import java.lang.invoke.VarHandle;
import java.nio.MappedByteBuffer;
import java.util.Arrays;
import java.util.List;

import static io.kvmarket.registry.shm.RegistryFile.LONGS;
import static io.kvmarket.registry.shm.RegistryFileDescriptor.*;

/**
 * The one encoding of a slot ({@link RegistryFileDescriptor}) and its sequence lock: readers copy a slot out
 * between two equal, even reads of its seq; a writer makes seq odd, writes, and makes it even again. Pins are
 * changed by CAS without the file lock, and a writer that replaces a slot resets them, so a pin checks afterwards
 * that the slot's seq did not move.
 */
final class SlotCodec {

    private static final int READ_RETRIES = 64;

    private final MappedByteBuffer map;

    SlotCodec(MappedByteBuffer map) {
        this.map = map;
    }

    /** One slot's fields, copied out; reused per thread so lookups allocate only the offers they return. */
    static final class SlotView {
        long seq;
        long state;
        long keyHi;
        long keyLo;
        long ownerPid;
        long ownerStart;
        long nodeId;
        long generation;
        long leaseExpiry;
        long chunkOffset;
        long chunkLength;
        long layoutFingerprint;
        long rawEndpointsLength;
        int endpointsLength;
        final byte[] endpoints = new byte[ENDPOINTS_CAPACITY];
        private byte[] lastEncoded;
        private List<Endpoint> lastEndpoints;

        boolean hasKey(ChunkKey key) {
            return keyHi == key.hi() && keyLo == key.lo();
        }

        /**
         * True when this is the exact publication {@code offer} ({@link Offer#samePublication}), endpoints
         * compared in their encoding.
         */
        boolean isPublication(Offer offer) {
            if (rawEndpointsLength != endpointsLength || generation != offer.generation()
                    || chunkLength != offer.length() || layoutFingerprint != offer.layoutFingerprint() || ownerPid != offer.owner().pid()
                    || ownerStart != offer.owner().startTime() || nodeId != offer.nodeId()
                    || chunkOffset != offer.offset() || !hasKey(offer.key())) {
                return false;
            }
            return Endpoint.isEncodingOf(offer.endpoints(), endpoints, 0, endpointsLength);
        }

        /**
         * Fields an {@link Offer} accepts, endpoints included, so {@link #toOffer} cannot fail; checked without
         * allocating, since every lookup asks.
         */
        boolean wellFormed() {
            return rawEndpointsLength >= 1 && rawEndpointsLength <= ENDPOINTS_CAPACITY && chunkOffset >= 0
                    && chunkLength > 0 && ownerPid > 0 && Endpoint.isAcceptableEncoding(endpoints, 0, endpointsLength);
        }

        /** @throws IllegalArgumentException when the slot holds what no offer can be (check {@link #wellFormed}) */
        Offer toOffer() {
            return new Offer(new ChunkKey(keyHi, keyLo), nodeId, new ProcessIdentity(ownerPid, ownerStart),
                    endpointList(), chunkOffset, chunkLength, layoutFingerprint, generation, leaseExpiry);
        }

        /**
         * The decoded endpoints, reused while consecutive slots carry the same ones: every chunk of a pool does,
         * and a prefix lookup reads a pool's chunks one after another.
         */
        private List<Endpoint> endpointList() {
            if (lastEndpoints == null || !Arrays.equals(endpoints, 0, endpointsLength, lastEncoded, 0,
                    lastEncoded.length)) {
                lastEndpoints = List.copyOf(Endpoint.decode(endpoints, 0, endpointsLength));
                lastEncoded = Arrays.copyOf(endpoints, endpointsLength);
            }
            return lastEndpoints;
        }
    }

    private void read(int base, SlotView v) {
        v.state = map.getLong(base + STATE);
        v.keyHi = map.getLong(base + KEY_HI);
        v.keyLo = map.getLong(base + KEY_LO);
        v.ownerPid = map.getLong(base + OWNER_PID);
        v.ownerStart = map.getLong(base + OWNER_START);
        v.nodeId = map.getLong(base + NODE_ID);
        v.generation = map.getLong(base + GENERATION);
        v.leaseExpiry = (long) LONGS.getOpaque(map, base + LEASE_EXPIRY);
        v.chunkOffset = map.getLong(base + CHUNK_OFFSET);
        v.chunkLength = map.getLong(base + CHUNK_LENGTH);
        v.layoutFingerprint = map.getLong(base + LAYOUT_FINGERPRINT);
        v.rawEndpointsLength = map.getLong(base + ENDPOINTS_LENGTH);
        v.endpointsLength = (int) Math.max(0, Math.min(ENDPOINTS_CAPACITY, v.rawEndpointsLength));
        map.get(base + ENDPOINTS, v.endpoints, 0, v.endpointsLength);
    }

    /** Copies the slot out without the lock; false when a writer kept changing it (treat as absent: a miss). */
    boolean readConsistent(long slot, SlotView v) {
        int base = slotOffset(slot);
        for (int attempt = 0; attempt < READ_RETRIES; attempt++) {
            long s1 = (long) LONGS.getAcquire(map, base + SEQ);
            if ((s1 & 1) != 0) {
                Thread.onSpinWait();
                continue;
            }
            read(base, v);
            VarHandle.loadLoadFence();
            long s2 = (long) LONGS.getVolatile(map, base + SEQ);
            if (s1 == s2) {
                v.seq = s1;
                return true;
            }
        }
        return false;
    }

    /** Copies the slot out under the file lock, where no one else writes, so one read is consistent. */
    void readLocked(long slot, SlotView v) {
        int base = slotOffset(slot);
        read(base, v);
        v.seq = map.getLong(base + SEQ);
    }

    long state(long slot) {
        return map.getLong(slotOffset(slot) + STATE);
    }

    long seq(long slot) {
        return (long) LONGS.getVolatile(map, slotOffset(slot) + SEQ);
    }

    // ---- writing (caller holds the file lock and has named the slot dirty)

    /** Makes the slot odd: readers skip it, and racing pins fail their sequence check. */
    void beginWrite(long slot) {
        int base = slotOffset(slot);
        long seq = map.getLong(base + SEQ);
        LONGS.setOpaque(map, base + SEQ, (seq & 1) != 0 ? seq : seq + 1);
        VarHandle.storeStoreFence();
    }

    void endWrite(long slot) {
        int base = slotOffset(slot);
        LONGS.setRelease(map, base + SEQ, map.getLong(base + SEQ) + 1);
    }

    /**
     * Ends a write that changed nothing by restoring the slot's even sequence: readers and pins that saw it before
     * stay valid, where {@link #endWrite} would fail a racing pin for no reason.
     */
    void abandonWrite(long slot) {
        int base = slotOffset(slot);
        LONGS.setRelease(map, base + SEQ, map.getLong(base + SEQ) - 1);
    }

    /** Inside a write: the slot becomes a live offer with the given pin state. */
    void putLive(long slot, Offer offer, long pinCount, long pinExpiry, long lastPin) {
        int base = slotOffset(slot);
        byte[] endpoints = Endpoint.encode(offer.endpoints());
        map.putLong(base + STATE, STATE_LIVE)
                .putLong(base + KEY_HI, offer.key().hi()).putLong(base + KEY_LO, offer.key().lo())
                .putLong(base + OWNER_PID, offer.owner().pid()).putLong(base + OWNER_START, offer.owner().startTime())
                .putLong(base + NODE_ID, offer.nodeId()).putLong(base + GENERATION, offer.generation())
                .putLong(base + LEASE_EXPIRY, offer.leaseExpiryMs()).putLong(base + CHUNK_OFFSET, offer.offset())
                .putLong(base + CHUNK_LENGTH, offer.length())
                .putLong(base + LAYOUT_FINGERPRINT, offer.layoutFingerprint())
                .putLong(base + PIN_COUNT, pinCount).putLong(base + PIN_EXPIRY, pinExpiry)
                .putLong(base + LAST_PIN, lastPin)
                .putLong(base + ENDPOINTS_LENGTH, endpoints.length);
        map.put(base + ENDPOINTS, endpoints);
    }

    /** Inside a write: the slot's state, with pins cleared. */
    void putState(long slot, long state) {
        int base = slotOffset(slot);
        map.putLong(base + STATE, state);
        map.putLong(base + PIN_COUNT, 0).putLong(base + PIN_EXPIRY, 0).putLong(base + LAST_PIN, 0);
    }

    void setLeaseExpiry(long slot, long expiryMs) {
        LONGS.setRelease(map, slotOffset(slot) + LEASE_EXPIRY, expiryMs);
    }

    // ---- pins (no lock)

    long pinCount(long slot) {
        return (long) LONGS.getVolatile(map, slotOffset(slot) + PIN_COUNT);
    }

    long pinExpiry(long slot) {
        return (long) LONGS.getVolatile(map, slotOffset(slot) + PIN_EXPIRY);
    }

    long lastPin(long slot) {
        return (long) LONGS.getVolatile(map, slotOffset(slot) + LAST_PIN);
    }

    /**
     * Adds a pin with its expiry and time to the slot read as {@code seq}.
     *
     * @return false when a writer replaced the slot meanwhile: it reset the pin fields, and the stray pin on its
     *         new entry lapses with the lease
     */
    boolean pin(long slot, long seq, long expiryMs, long nowMs) {
        int base = slotOffset(slot);
        long count;
        do {
            count = (long) LONGS.getVolatile(map, base + PIN_COUNT);
        } while (!LONGS.compareAndSet(map, base + PIN_COUNT, count, count + 1));
        casMax(base + PIN_EXPIRY, expiryMs);
        casMax(base + LAST_PIN, nowMs);
        return (long) LONGS.getVolatile(map, base + SEQ) == seq;
    }

    /** Drops one pin of the slot read as {@code seq}; nothing when it was replaced or holds no pin. */
    void unpin(long slot, long seq) {
        int base = slotOffset(slot);
        long count;
        do {
            count = (long) LONGS.getVolatile(map, base + PIN_COUNT);
            if (count <= 0 || (long) LONGS.getVolatile(map, base + SEQ) != seq) {
                return;
            }
        } while (!LONGS.compareAndSet(map, base + PIN_COUNT, count, count - 1));
    }

    private void casMax(int offset, long value) {
        long old;
        do {
            old = (long) LONGS.getVolatile(map, offset);
        } while (old < value && !LONGS.compareAndSet(map, offset, old, value));
    }
}
