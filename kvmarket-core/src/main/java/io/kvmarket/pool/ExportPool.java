package io.kvmarket.pool;

import io.kvmarket.device.Device;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.registry.RegistryException;
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
import java.util.concurrent.atomic.AtomicLong;

/**
 * Device memory owned by the marketplace, cut into fixed chunk slots, that holds exported chunks so the engine
 * may reuse its own blocks at once. Bounded by a byte budget; when full it evicts the least recently used
 * published chunk that no importer has pinned, and always <b>withdraws the offer before the memory is reused</b>.
 * Thread-safe.
 */
public final class ExportPool implements AutoCloseable {

    private static final Logger LOG = LoggerFactory.getLogger(ExportPool.class);

    private final Device device;
    private final OfferRegistry registry;
    private final long chunkBytes;
    private final int slots;
    private final DeviceBuffer buffer;
    private final byte[] handle;
    private final AtomicLong generations = new AtomicLong();
    private final ArrayDeque<Integer> free = new ArrayDeque<>();
    /** Published slots in least-recently-used order. */
    private final LinkedHashMap<Integer, Offer> published = new LinkedHashMap<>(16, 0.75f, true);
    private final Map<ChunkKey, Integer> slotOfKey = new HashMap<>();
    private long evictions;

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
        this.buffer = device.allocate(count * chunkBytes);
        this.handle = device.exportHandle(buffer);
        // Generations start from the clock so a restarted pool never repeats one of its predecessor's.
        generations.set(System.currentTimeMillis() << 20);
        for (int i = 0; i < slots; i++) {
            free.add(i);
        }
    }

    public DeviceBuffer buffer() {
        return buffer;
    }

    /** IPC handle of the pool buffer; every offer of this pool carries it. */
    public byte[] handle() {
        return handle.clone();
    }

    public long chunkBytes() {
        return chunkBytes;
    }

    public int capacityChunks() {
        return slots;
    }

    public long offsetOf(int slot) {
        return slot * chunkBytes;
    }

    public long nextGeneration() {
        return generations.incrementAndGet();
    }

    /**
     * Reserves up to {@code wanted} slots for filling, evicting unpinned published chunks as needed (offer
     * withdrawn first). Returns fewer when the rest are pinned or being filled.
     */
    public synchronized int[] reserve(int wanted) {
        int[] got = new int[wanted];
        int n = 0;
        while (n < wanted && !free.isEmpty()) {
            got[n++] = free.poll();
        }
        for (Iterator<Map.Entry<Integer, Offer>> it = published.entrySet().iterator(); n < wanted && it.hasNext(); ) {
            Map.Entry<Integer, Offer> e = it.next();
            boolean withdrawn;
            try {
                withdrawn = registry.withdrawIfUnpinned(e.getValue());
            } catch (RegistryException ex) {
                LOG.warn("cannot withdraw {} for eviction, keeping its memory: {}", e.getValue(), ex.getMessage());
                withdrawn = false;
            }
            if (withdrawn) {
                it.remove();
                slotOfKey.remove(e.getValue().key());
                evictions++;
                got[n++] = e.getKey();
            }
        }
        return n == wanted ? got : Arrays.copyOf(got, n);
    }

    /** Records that {@code slot} now holds the published {@code offer}. */
    public synchronized void published(int slot, Offer offer) {
        published.put(slot, offer);
        slotOfKey.put(offer.key(), slot);
    }

    /** Returns a reserved slot that was not published. */
    public synchronized void unreserve(int slot) {
        free.add(slot);
    }

    /** Marks a chunk this pool holds as recently used. */
    public synchronized void touch(ChunkKey key) {
        Integer slot = slotOfKey.get(key);
        if (slot != null) {
            published.get(slot);
        }
    }

    /** The offers this pool has published, for lease renewal. */
    public synchronized List<Offer> publishedOffers() {
        return new ArrayList<>(published.values());
    }

    /** Forgets a publication the registry no longer holds (its lease lapsed); frees the slot. */
    public synchronized void lost(Offer offer) {
        Integer slot = slotOfKey.get(offer.key());
        if (slot != null && published.get(slot).samePublication(offer)) {
            published.remove(slot);
            slotOfKey.remove(offer.key());
            free.add(slot);
        }
    }

    public synchronized long evictions() {
        return evictions;
    }

    public synchronized int publishedChunks() {
        return published.size();
    }

    /**
     * Withdraws every offer, pinned or not since the owner is leaving, then frees the memory. An importer still
     * copying fails its generation check and reports a miss.
     */
    @Override
    public synchronized void close() {
        for (Offer o : published.values()) {
            try {
                registry.withdraw(o);
            } catch (RegistryException e) {
                LOG.warn("cannot withdraw {} on close: {}", o, e.getMessage());
            }
        }
        published.clear();
        slotOfKey.clear();
        device.free(buffer);
    }
}
