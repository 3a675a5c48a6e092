package io.kvmarket.registry.shm;

import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.LivenessCache;
import io.kvmarket.node.MappedFaults;
import io.kvmarket.node.NodeDirectory;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.registry.PublishOutcome;
import io.kvmarket.registry.RegistryException;
import io.kvmarket.registry.Withdrawal;
import io.kvmarket.registry.shm.SlotCodec.SlotView;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.lang.invoke.VarHandle;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.function.LongSupplier;
import java.util.function.Supplier;


/**
 * The embedded default registry for several processes on one node: a hash table in a memory-mapped file under
 * {@link NodeDirectory} (layout in {@link RegistryFileDescriptor}). No server: the first process creates the
 * file, every later one maps it. Lookups are lock-free; writes take an fcntl lock that the kernel releases when
 * a holder dies. A process killed with SIGKILL leaves nothing that blocks the others: its half-written slot is
 * repaired by the next writer and its offers stop being served as soon as its death is seen (at most
 * {@value #LIVENESS_TTL_MS} ms later), then are swept.
 *
 * <p>This class is the offer policy (what is served, publish-if-absent, pins, withdraw-if-unused); the file's
 * lifecycle and locking are {@link RegistryFile}'s, a slot's encoding {@link SlotCodec}'s, and probing
 * {@link SlotTable}'s.
 *
 * <p>Why not LMDB (lmdbjava): it needs {@code --add-opens java.base/java.nio} in every JVM that links the library,
 * and a write costs ~5 us against ~1 us here; the table needs no transactions beyond one slot at a time.
 */
public final class NodeLocalRegistry implements OfferRegistry {

    public static final String FILE_NAME = "registry-v5.kvreg";
    /** 32,768 slots of 512 bytes: a 16 MiB file, room for 24,576 offers on the node. */
    public static final int DEFAULT_CAPACITY = 1 << 15;
    /** At most this long after a process dies, its offers stop being served. */
    public static final long LIVENESS_TTL_MS = 250;

    private static final Logger LOG = LoggerFactory.getLogger(NodeLocalRegistry.class);

    private final RegistryFile file;
    private final SlotCodec slots;
    private final SlotTable table;
    private final LivenessCache liveness = new LivenessCache(LIVENESS_TTL_MS * 1_000_000L);
    private final LongSupplier clockMs;
    private final SlotTable.Served served = this::served;
    private final ThreadLocal<SlotView> views = ThreadLocal.withInitial(SlotView::new);
    /** Guarded by the file lock. */
    private long lastFullWarningMs = Long.MIN_VALUE / 2;

    /** Opens (creating if needed) the registry in the node's default directory. */
    public static NodeLocalRegistry openDefault() {
        return open(NodeDirectory.defaultPath(), DEFAULT_CAPACITY);
    }

    /**
     * Opens the registry file in {@code dir}, creating it with {@code capacity} slots when no process has yet.
     * An existing file keeps its own capacity.
     */
    public static NodeLocalRegistry open(Path dir, int capacity) {
        return new NodeLocalRegistry(dir, capacity, System::currentTimeMillis);
    }

    /** As {@link #open(Path, int)}, with the clock that leases are judged by (tests move it). */
    public static NodeLocalRegistry open(Path dir, int capacity, LongSupplier clockMs) {
        return new NodeLocalRegistry(dir, capacity, clockMs);
    }

    private NodeLocalRegistry(Path dir, int capacity, LongSupplier clockMs) {
        if (capacity < 16 || Integer.bitCount(capacity) != 1 || capacity > RegistryFileDescriptor.MAX_CAPACITY) {
            throw new IllegalArgumentException("capacity must be a power of two in [16, 2^21], was " + capacity);
        }
        this.clockMs = clockMs;
        this.file = RegistryFile.open(dir, FILE_NAME, capacity);
        this.slots = new SlotCodec(file.map());
        this.table = new SlotTable(file, slots);
        try {
            // Counters live in shared memory that any process of the user may have damaged: trust none at open.
            locked(() -> {
                table.recount();
                return null;
            });
        } catch (RuntimeException e) {
            file.close();
            throw e;
        }
    }

    public Path file() {
        return file.path();
    }

    /**
     * Served: live lease, live owner, and fields an offer can hold. A slot some process damaged is never served, so
     * lookups pass over it as a miss and writers tombstone it like any unserved slot.
     */
    private boolean served(SlotView v, long nowMs) {
        return v.leaseExpiry > nowMs && v.wellFormed()
                && liveness.isAlive(new ProcessIdentity(v.ownerPid, v.ownerStart));
    }

    @Override
    public PublishOutcome publish(Offer offer) {
        return locked(() -> {
            long now = clockMs.getAsLong();
            long slot = table.probeForPublish(offer.key(), now, served, views.get());
            if (slot == SlotTable.TAKEN) {
                return PublishOutcome.ALREADY_OFFERED;
            }
            if (slot < 0 || file.live() >= maxLive()) {
                table.recount(); // refuse only on a count just taken, never on one a damaged file carried
                if (slot < 0 || file.live() >= maxLive()) {
                    warnFull(now);
                    return PublishOutcome.REGISTRY_FULL;
                }
            }
            table.writeLive(slot, offer);
            return PublishOutcome.PUBLISHED;
        });
    }

    private long maxLive() {
        return file.capacity() * 3 / 4;
    }

    /** Every export is skipped while the table is full: say so where operators look, at most every 10 s. */
    private void warnFull(long nowMs) {
        if (nowMs - lastFullWarningMs >= 10_000 || nowMs < lastFullWarningMs) {
            lastFullWarningMs = nowMs;
            LOG.warn("node-local registry {} is full ({} live offers of {} slots): exports are skipped until offers "
                    + "are withdrawn. Give the processes of this node smaller export pools, or stop them all, delete "
                    + "the file and open it with a larger capacity", file.path(), file.live(), file.capacity());
        }
    }

    @Override
    public List<Offer> lookupPrefix(ChunkKey[] keys, int maxChunks) {
        return mapped(() -> lookupPrefixMapped(keys, maxChunks));
    }

    private List<Offer> lookupPrefixMapped(ChunkKey[] keys, int maxChunks) {
        long now = clockMs.getAsLong();
        int limit = Math.min(keys.length, maxChunks);
        List<Offer> found = new ArrayList<>(limit);
        SlotView v = views.get();
        for (int i = 0; i < limit; i++) {
            if (table.find(keys[i], v) < 0 || !served(v, now)) {
                break;
            }
            found.add(v.toOffer());
        }
        return found;
    }

    @Override
    public Offer lookup(ChunkKey key) {
        SlotView v = views.get();
        return mapped(() -> table.find(key, v) >= 0 && served(v, clockMs.getAsLong()) ? v.toOffer() : null);
    }

    @Override
    public boolean pin(Offer offer, long leaseMs) {
        long now = clockMs.getAsLong();
        long expiry = OfferRegistry.expiry(now, leaseMs);
        SlotView v = views.get();
        return mapped(() -> {
            long slot = table.findPublication(offer, v);
            return slot >= 0 && slots.pin(slot, v.seq, expiry, now);
        });
    }

    @Override
    public void unpin(Offer offer) {
        SlotView v = views.get();
        mapped(() -> {
            long slot = table.findPublication(offer, v);
            if (slot >= 0) {
                slots.unpin(slot, v.seq);
            }
            return null;
        });
    }

    @Override
    public long clockMillis() {
        return clockMs.getAsLong();
    }

    @Override
    public boolean isCurrent(Offer offer) {
        return mapped(() -> table.findPublication(offer, views.get()) >= 0);
    }

    @Override
    public Withdrawal withdrawIfUnused(Offer offer, long usedSinceMs) {
        return locked(() -> {
            long slot = table.findPublicationLocked(offer, views.get());
            if (slot < 0) {
                return Withdrawal.WITHDRAWN;
            }
            Withdrawal kept = keptBy(slot, usedSinceMs);
            if (kept != null) {
                return kept; // decided without writing, so pins racing this one stand
            }
            // The slot goes odd before the pins are read again: a pin racing with this either is seen here or
            // fails its own sequence check afterwards.
            table.beginWrite(slot);
            VarHandle.fullFence();
            kept = keptBy(slot, usedSinceMs);
            if (kept != null) {
                slots.abandonWrite(slot);
                return kept;
            }
            table.finishAsTombstone(slot);
            return Withdrawal.WITHDRAWN;
        });
    }

    /** Why the offer in {@code slot} must stay, or null when it may be withdrawn. */
    private Withdrawal keptBy(long slot, long usedSinceMs) {
        if (slots.pinCount(slot) > 0 && slots.pinExpiry(slot) > clockMs.getAsLong()) {
            return Withdrawal.PINNED;
        }
        return slots.lastPin(slot) > usedSinceMs ? Withdrawal.IMPORTED_SINCE : null;
    }

    @Override
    public void withdraw(Offer offer) {
        locked(() -> {
            long slot = table.findPublicationLocked(offer, views.get());
            if (slot >= 0) {
                table.tombstone(slot);
            }
            return null;
        });
    }

    @Override
    public boolean renew(Offer offer, long leaseExpiryMs) {
        return locked(() -> {
            long slot = table.findPublicationLocked(offer, views.get());
            if (slot < 0) {
                return false;
            }
            slots.setLeaseExpiry(slot, leaseExpiryMs);
            return true;
        });
    }

    /** Offers in the table (served or not yet swept); for tests and metrics. */
    public long liveSlots() {
        return mapped(file::live);
    }

    /** Tombstones every offer whose owner is dead or whose lease expired. */
    public void sweep() {
        locked(() -> {
            table.sweep(clockMs.getAsLong(), served, views.get());
            return null;
        });
    }

    /** Closes this instance: its later calls fail (a RegistryException); other openings of the file go on. */
    @Override
    public void close() {
        file.close();
    }

    /** A write section: repairs what a killed writer left, then runs {@code body}, then compacts if needed. */
    private <T> T locked(Supplier<T> body) {
        return mapped(() -> file.withLock(() -> {
            table.repairAfterKilledWriter(clockMs.getAsLong(), served);
            table.checkCounters();
            T result = body.get();
            table.compactIfNeeded(clockMs.getAsLong(), served);
            file.setDirtySlot(-1);
            return result;
        }));
    }

    /**
     * Runs {@code body} over the mapped file: a file some process of the user truncated faults on access, which is
     * this registry's failure (a miss to the marketplace), not an error of the caller's. The file is checked first
     * ({@link RegistryFile#checkUsable}), since a fault in compiled code may be reported past this handler.
     */
    private <T> T mapped(Supplier<T> body) {
        try {
            file.checkUsable();
            return body.get();
        } catch (InternalError e) {
            if (!MappedFaults.isFault(e)) {
                throw e;
            }
            RegistryException failure = file.damaged("faulted: " + e.getMessage());
            failure.initCause(e);
            throw failure;
        }
    }
}
