package io.kvmarket.registry.shm;

import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.LivenessCache;
import io.kvmarket.node.NodeDirectory;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.registry.PublishOutcome;
import io.kvmarket.registry.RegistryException;
import io.kvmarket.registry.Withdrawal;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteOrder;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.locks.ReentrantLock;
import java.util.function.LongSupplier;
import java.util.function.Supplier;

import static io.kvmarket.registry.shm.RegistryFileDescriptor.*;

/**
 * The embedded default registry for several processes on one node: a hash table in a memory-mapped file under
 * {@link NodeDirectory} (layout in {@link RegistryFileDescriptor}). No server: the first process creates the
 * file, every later one maps it. Lookups are lock-free; writes take an fcntl lock that the kernel releases when
 * a holder dies. A process killed with SIGKILL leaves nothing that blocks the others: its half-written slot is
 * repaired by the next writer and its offers stop being served as soon as its death is seen (at most
 * {@value #LIVENESS_TTL_MS} ms later), then are swept.
 *
 * <p>Why not LMDB (lmdbjava): it needs {@code --add-opens java.base/java.nio} in every JVM that links the library,
 * and a write costs ~5 us against ~1 us here; the table needs no transactions beyond one slot at a time.
 */
public final class NodeLocalRegistry implements OfferRegistry {

    public static final String FILE_NAME = "registry-v3.kvreg";
    public static final int DEFAULT_CAPACITY = 1 << 16;
    /** At most this long after a process dies, its offers stop being served. */
    public static final long LIVENESS_TTL_MS = 250;

    private static final Logger LOG = LoggerFactory.getLogger(NodeLocalRegistry.class);
    private static final VarHandle LONGS = MethodHandles.byteBufferViewVarHandle(long[].class, ByteOrder.LITTLE_ENDIAN);
    private static final ConcurrentHashMap<Path, ReentrantLock> JVM_LOCKS = new ConcurrentHashMap<>();
    private static final int READ_RETRIES = 64;

    private final Path file;
    /** Reopened when a thread interrupted inside {@link FileChannel#lock} closed it; guarded by jvmLock. */
    private FileChannel channel;
    private final MappedByteBuffer map;
    private final long capacity;
    private final long mask;
    private final ReentrantLock jvmLock;
    private final LivenessCache liveness = new LivenessCache(LIVENESS_TTL_MS * 1_000_000L);
    private final LongSupplier clockMs;
    private final ThreadLocal<SlotView> views = ThreadLocal.withInitial(SlotView::new);
    /** Guarded by jvmLock. */
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
        if (capacity < 16 || Integer.bitCount(capacity) != 1 || fileBytes(capacity) > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("capacity must be a power of two in [16, 2^22], was " + capacity);
        }
        this.clockMs = clockMs;
        Path path = NodeDirectory.ensure(dir).resolve(FILE_NAME);
        try {
            createIfMissing(path, capacity);
            NodeDirectory.checkOwnFile(path);
            // One lock per file, however it is named: fcntl locks belong to the process, not to a channel.
            this.file = path.toRealPath();
            this.jvmLock = JVM_LOCKS.computeIfAbsent(file, p -> new ReentrantLock());
            this.channel = FileChannel.open(file, StandardOpenOption.READ, StandardOpenOption.WRITE);
            long size = channel.size();
            if (size < HEADER_BYTES) {
                throw new RegistryException("registry file " + file + " is truncated (" + size + " bytes)");
            }
            MappedByteBuffer header = channel.map(FileChannel.MapMode.READ_ONLY, 0, HEADER_BYTES);
            header.order(ByteOrder.LITTLE_ENDIAN);
            long cap = header.getLong(CAPACITY_OFFSET);
            if (header.getLong(MAGIC_OFFSET) != MAGIC || header.getInt(VERSION_OFFSET) != VERSION
                    || header.getInt(SLOT_BYTES_OFFSET) != SLOT_BYTES || cap <= 0 || Long.bitCount(cap) != 1
                    || fileBytes(cap) != size) {
                throw new RegistryException("registry file " + file + " has an incompatible or corrupted header");
            }
            this.capacity = cap;
            this.mask = cap - 1;
            this.map = channel.map(FileChannel.MapMode.READ_WRITE, 0, size);
            this.map.order(ByteOrder.LITTLE_ENDIAN);
        } catch (IOException e) {
            throw new RegistryException("cannot open node-local registry " + path, e);
        }
        // Counters live in shared memory that any process of the user may have damaged: trust none at open.
        withLock(() -> {
            recount();
            return null;
        });
    }

    private static void createIfMissing(Path file, int capacity) throws IOException {
        if (Files.exists(file)) {
            return;
        }
        // Build the file aside and hard-link it into place: others see either no file or a complete header.
        Path tmp = file.resolveSibling(FILE_NAME + "." + ProcessHandle.current().pid() + "." + System.nanoTime() + ".tmp");
        try (FileChannel ch = FileChannel.open(tmp, Set.of(StandardOpenOption.CREATE_NEW, StandardOpenOption.READ,
                StandardOpenOption.WRITE), NodeDirectory.PRIVATE_FILE)) {
            MappedByteBuffer m = ch.map(FileChannel.MapMode.READ_WRITE, 0, fileBytes(capacity));
            m.order(ByteOrder.LITTLE_ENDIAN);
            m.putInt(VERSION_OFFSET, VERSION).putInt(SLOT_BYTES_OFFSET, SLOT_BYTES)
                    .putLong(CAPACITY_OFFSET, capacity).putLong(DIRTY_SLOT_OFFSET, -1L);
            m.putLong(MAGIC_OFFSET, MAGIC);
            m.force();
        }
        try {
            Files.createLink(file, tmp);
        } catch (FileAlreadyExistsException raced) {
            // another process created it first; use theirs
        } finally {
            Files.deleteIfExists(tmp);
        }
    }

    public Path file() {
        return file;
    }

    @Override
    public PublishOutcome publish(Offer offer) {
        return withLock(() -> {
            long now = clockMs.getAsLong();
            SlotView v = views.get();
            long free = -1;
            long home = offer.key().lo() & mask;
            for (long probe = 0; probe < capacity; probe++) {
                long slot = (home + probe) & mask;
                readStableUnderLock(slot, v);
                if (v.state == STATE_EMPTY) {
                    if (free < 0) {
                        free = slot;
                    }
                    break;
                }
                if (v.state == STATE_TOMBSTONE) {
                    if (free < 0) {
                        free = slot;
                    }
                    continue;
                }
                boolean served = served(v, now);
                if (served && v.keyHi == offer.key().hi() && v.keyLo == offer.key().lo()) {
                    return PublishOutcome.ALREADY_OFFERED;
                }
                if (!served) {
                    tombstone(slot);
                    if (free < 0) {
                        free = slot;
                    }
                }
            }
            if (free < 0 || map.getLong(LIVE_OFFSET) >= maxLive()) {
                recount(); // refuse only on a count just taken, never on one a damaged file carried
                if (free < 0 || map.getLong(LIVE_OFFSET) >= maxLive()) {
                    warnFull(now);
                    return PublishOutcome.REGISTRY_FULL;
                }
            }
            writeLive(free, offer);
            return PublishOutcome.PUBLISHED;
        });
    }

    @Override
    public List<Offer> lookupPrefix(ChunkKey[] keys, int maxChunks) {
        long now = clockMs.getAsLong();
        int limit = Math.min(keys.length, maxChunks);
        List<Offer> found = new ArrayList<>(limit);
        SlotView v = views.get();
        for (int i = 0; i < limit; i++) {
            if (find(keys[i], v) < 0 || !served(v, now)) {
                break;
            }
            found.add(v.toOffer());
        }
        return found;
    }

    @Override
    public Offer lookup(ChunkKey key) {
        SlotView v = views.get();
        return find(key, v) >= 0 && served(v, clockMs.getAsLong()) ? v.toOffer() : null;
    }

    private long maxLive() {
        return capacity * 3 / 4;
    }

    /** Every export is skipped while the table is full: say so where operators look, at most every 10 s. */
    private void warnFull(long nowMs) {
        if (nowMs - lastFullWarningMs >= 10_000 || nowMs < lastFullWarningMs) {
            lastFullWarningMs = nowMs;
            LOG.warn("node-local registry {} is full ({} live offers of {} slots): exports are skipped until offers "
                    + "are withdrawn. Give the processes of this node smaller export pools, or stop them all, delete "
                    + "the file and open it with a larger capacity", file, map.getLong(LIVE_OFFSET), capacity);
        }
    }

    @Override
    public boolean pin(Offer offer, long leaseMs) {
        long expiry = OfferRegistry.expiry(clockMs.getAsLong(), leaseMs);
        SlotView v = views.get();
        long slot = findPublication(offer, v);
        if (slot < 0) {
            return false;
        }
        int base = slotOffset(slot);
        long seq = v.seq;
        long count;
        do {
            count = (long) LONGS.getVolatile(map, base + PIN_COUNT);
        } while (!LONGS.compareAndSet(map, base + PIN_COUNT, count, count + 1));
        casMax(base + PIN_EXPIRY, expiry);
        casMax(base + LAST_PIN, clockMs.getAsLong());
        // A writer that replaced the slot meanwhile reset the pin fields; our stray pin on its new entry lapses
        // with the lease. The publication we wanted is gone: report failure.
        return (long) LONGS.getVolatile(map, base + SEQ) == seq;
    }

    private void casMax(int offset, long value) {
        long old;
        do {
            old = (long) LONGS.getVolatile(map, offset);
        } while (old < value && !LONGS.compareAndSet(map, offset, old, value));
    }

    @Override
    public void unpin(Offer offer) {
        SlotView v = views.get();
        long slot = findPublication(offer, v);
        if (slot < 0) {
            return;
        }
        int base = slotOffset(slot);
        long count;
        do {
            count = (long) LONGS.getVolatile(map, base + PIN_COUNT);
            if (count <= 0 || (long) LONGS.getVolatile(map, base + SEQ) != v.seq) {
                return;
            }
        } while (!LONGS.compareAndSet(map, base + PIN_COUNT, count, count - 1));
    }

    @Override
    public long clockMillis() {
        return clockMs.getAsLong();
    }

    @Override
    public boolean isCurrent(Offer offer) {
        return findPublication(offer, views.get()) >= 0;
    }

    @Override
    public Withdrawal withdrawIfUnused(Offer offer, long usedSinceMs) {
        return withLock(() -> {
            SlotView v = views.get();
            long slot = findPublication(offer, v);
            if (slot < 0) {
                return Withdrawal.WITHDRAWN;
            }
            int base = slotOffset(slot);
            Withdrawal kept = keptBy(base, usedSinceMs);
            if (kept != null) {
                return kept; // decided without writing, so pins racing this one stand
            }
            // The slot goes odd before the pins are read again: a pin racing with this either is seen here or
            // fails its own sequence check afterwards.
            beginWrite(slot);
            VarHandle.fullFence();
            kept = keptBy(base, usedSinceMs);
            if (kept != null) {
                abandonWrite(base);
                return kept;
            }
            markTombstone(base);
            return Withdrawal.WITHDRAWN;
        });
    }

    @Override
    public void withdraw(Offer offer) {
        withLock(() -> {
            long slot = findPublication(offer, views.get());
            if (slot >= 0) {
                tombstone(slot);
            }
            return null;
        });
    }

    @Override
    public boolean renew(Offer offer, long leaseExpiryMs) {
        return withLock(() -> {
            long slot = findPublication(offer, views.get());
            if (slot < 0) {
                return false;
            }
            LONGS.setRelease(map, slotOffset(slot) + LEASE_EXPIRY, leaseExpiryMs);
            return true;
        });
    }

    /** Offers in the table (served or not yet swept); for tests and metrics. */
    public long liveSlots() {
        return (long) LONGS.getVolatile(map, LIVE_OFFSET);
    }

    /** Tombstones every offer whose owner is dead or whose lease expired. */
    public void sweep() {
        withLock(() -> {
            long now = clockMs.getAsLong();
            SlotView v = views.get();
            for (long slot = 0; slot < capacity; slot++) {
                readStableUnderLock(slot, v);
                if (v.state == STATE_LIVE && !served(v, now)) {
                    tombstone(slot);
                }
            }
            return null;
        });
    }

    /** Closes this instance's channel; under the JVM lock, since closing any channel drops the process's fcntl lock. */
    @Override
    public void close() {
        jvmLock.lock();
        try {
            channel.close();
        } catch (IOException e) {
            LOG.warn("closing registry file {}: {}", file, e.toString());
        } finally {
            jvmLock.unlock();
        }
    }

    // ---- reading

    /** Finds the live slot of {@code key}, leaving its consistent contents in {@code v}; -1 when absent. */
    private long find(ChunkKey key, SlotView v) {
        long home = key.lo() & mask;
        for (long probe = 0; probe < capacity; probe++) {
            long slot = (home + probe) & mask;
            if (!readConsistent(slot, v)) {
                continue; // being written right now: treat as not this key; at worst a miss
            }
            if (v.state == STATE_EMPTY) {
                return -1;
            }
            if (v.state == STATE_LIVE && v.keyHi == key.hi() && v.keyLo == key.lo()) {
                return slot;
            }
        }
        return -1;
    }

    /** The slot of this exact publication ({@link Offer#samePublication}), or -1. */
    private long findPublication(Offer offer, SlotView v) {
        long slot = find(offer.key(), v);
        return slot >= 0 && v.generation == offer.generation() && v.ownerPid == offer.owner().pid()
                && v.ownerStart == offer.owner().startTime() && v.nodeId == offer.nodeId()
                && v.chunkOffset == offer.offset() && v.sameHandle(offer) ? slot : -1;
    }

    private boolean readConsistent(long slot, SlotView v) {
        int base = slotOffset(slot);
        for (int attempt = 0; attempt < READ_RETRIES; attempt++) {
            long s1 = (long) LONGS.getAcquire(map, base + SEQ);
            if ((s1 & 1) != 0) {
                Thread.onSpinWait();
                continue;
            }
            v.read(map, base);
            VarHandle.loadLoadFence();
            long s2 = (long) LONGS.getVolatile(map, base + SEQ);
            if (s1 == s2) {
                v.seq = s1;
                return true;
            }
        }
        return false;
    }

    private void readStableUnderLock(long slot, SlotView v) {
        // Under the lock nobody else writes, so one read is consistent.
        int base = slotOffset(slot);
        v.read(map, base);
        v.seq = map.getLong(base + SEQ);
    }

    /**
     * Served: live lease, live owner, and fields an offer can hold. A slot some process damaged is never served, so
     * lookups pass over it as a miss and writers tombstone it like any unserved slot.
     */
    private boolean served(SlotView v, long nowMs) {
        return v.leaseExpiry > nowMs && v.wellFormed()
                && liveness.isAlive(new ProcessIdentity(v.ownerPid, v.ownerStart));
    }

    // ---- writing (caller holds the lock)

    private void writeLive(long slot, Offer offer) {
        writeLive(slot, offer, 0, 0, 0);
    }

    /** Writes a live offer with the given pin state, all inside one sequence-lock write. */
    private void writeLive(long slot, Offer offer, long pinCount, long pinExpiry, long lastPin) {
        int base = beginWrite(slot);
        long oldState = map.getLong(base + STATE);
        byte[] handle = offer.handle();
        map.putLong(base + STATE, STATE_LIVE)
                .putLong(base + KEY_HI, offer.key().hi()).putLong(base + KEY_LO, offer.key().lo())
                .putLong(base + OWNER_PID, offer.owner().pid()).putLong(base + OWNER_START, offer.owner().startTime())
                .putLong(base + NODE_ID, offer.nodeId()).putLong(base + GENERATION, offer.generation())
                .putLong(base + LEASE_EXPIRY, offer.leaseExpiryMs()).putLong(base + CHUNK_OFFSET, offer.offset())
                .putLong(base + CHUNK_LENGTH, offer.length())
                .putLong(base + LAYOUT_FINGERPRINT, offer.layoutFingerprint())
                .putLong(base + HANDLE_LENGTH, handle.length)
                .putLong(base + PIN_COUNT, pinCount).putLong(base + PIN_EXPIRY, pinExpiry)
                .putLong(base + LAST_PIN, lastPin);
        map.put(base + HANDLE, handle);
        endWrite(base);
        adjust(LIVE_OFFSET, 1);
        if (oldState == STATE_TOMBSTONE) {
            adjust(TOMBSTONES_OFFSET, -1);
        }
    }

    private void tombstone(long slot) {
        markTombstone(beginWrite(slot));
    }

    /** Finishes a write begun on the slot at {@code base} by turning it into a tombstone. */
    private void markTombstone(int base) {
        long oldState = map.getLong(base + STATE);
        map.putLong(base + STATE, STATE_TOMBSTONE);
        clearPins(base);
        endWrite(base);
        if (oldState == STATE_LIVE) {
            adjust(LIVE_OFFSET, -1);
        }
        if (oldState != STATE_TOMBSTONE) {
            adjust(TOMBSTONES_OFFSET, 1);
        }
    }

    private void clearPins(int base) {
        map.putLong(base + PIN_COUNT, 0).putLong(base + PIN_EXPIRY, 0).putLong(base + LAST_PIN, 0);
    }

    /** Why the offer at {@code base} must stay, or null when it may be withdrawn. */
    private Withdrawal keptBy(int base, long usedSinceMs) {
        if (pinned(base, clockMs.getAsLong())) {
            return Withdrawal.PINNED;
        }
        return (long) LONGS.getVolatile(map, base + LAST_PIN) > usedSinceMs ? Withdrawal.IMPORTED_SINCE : null;
    }

    private boolean pinned(int base, long nowMs) {
        return (long) LONGS.getVolatile(map, base + PIN_COUNT) > 0
                && (long) LONGS.getVolatile(map, base + PIN_EXPIRY) > nowMs;
    }

    /**
     * Makes the slot odd and names it in the header. The name stays until the locked section ends, so a writer
     * killed anywhere in it, counters included, is repaired by the next one.
     */
    private int beginWrite(long slot) {
        int base = slotOffset(slot);
        LONGS.setRelease(map, DIRTY_SLOT_OFFSET, slot);
        long seq = map.getLong(base + SEQ);
        LONGS.setOpaque(map, base + SEQ, (seq & 1) != 0 ? seq : seq + 1);
        VarHandle.storeStoreFence();
        return base;
    }

    private void endWrite(int base) {
        LONGS.setRelease(map, base + SEQ, map.getLong(base + SEQ) + 1);
    }

    /**
     * Ends a write that changed nothing by restoring the slot's even sequence: readers and pins that saw it before
     * stay valid, where {@link #endWrite} would fail a racing pin for no reason.
     */
    private void abandonWrite(int base) {
        LONGS.setRelease(map, base + SEQ, map.getLong(base + SEQ) - 1);
    }

    private void adjust(int headerOffset, long delta) {
        LONGS.setRelease(map, headerOffset, map.getLong(headerOffset) + delta);
    }

    /**
     * Rewrites the table without tombstones and unserved offers. Each slot is emptied in the same write that reads
     * its pins, so a pin is either carried over or fails its own sequence check; readers meanwhile may miss, never
     * mismatch.
     */
    private void rebuild(long now) {
        List<Offer> offers = new ArrayList<>();
        List<long[]> pins = new ArrayList<>();
        SlotView v = new SlotView();
        for (long slot = 0; slot < capacity; slot++) {
            int base = slotOffset(slot);
            if (map.getLong(base + STATE) == STATE_EMPTY) {
                continue;
            }
            readStableUnderLock(slot, v);
            beginWrite(slot);
            VarHandle.fullFence();
            if (v.state == STATE_LIVE && served(v, now)) {
                offers.add(v.toOffer());
                pins.add(new long[] {(long) LONGS.getVolatile(map, base + PIN_COUNT),
                        (long) LONGS.getVolatile(map, base + PIN_EXPIRY),
                        (long) LONGS.getVolatile(map, base + LAST_PIN)});
            }
            map.putLong(base + STATE, STATE_EMPTY);
            clearPins(base);
            endWrite(base);
        }
        map.putLong(LIVE_OFFSET, 0).putLong(TOMBSTONES_OFFSET, 0);
        for (int i = 0; i < offers.size(); i++) {
            Offer o = offers.get(i);
            long home = o.key().lo() & mask;
            for (long probe = 0; probe < capacity; probe++) {
                long slot = (home + probe) & mask;
                if (map.getLong(slotOffset(slot) + STATE) == STATE_EMPTY) {
                    writeLive(slot, o, pins.get(i)[0], pins.get(i)[1], pins.get(i)[2]);
                    break;
                }
            }
        }
        LOG.debug("registry {} rebuilt with {} live offers", file, offers.size());
    }

    private <T> T withLock(Supplier<T> body) {
        // FileChannel.lock closes the channel when the calling thread is interrupted; hold the flag back meanwhile.
        boolean interrupted = Thread.interrupted();
        jvmLock.lock();
        try {
            if (!channel.isOpen()) {
                channel = FileChannel.open(file, StandardOpenOption.READ, StandardOpenOption.WRITE);
            }
            try (FileLock lock = channel.lock(0, HEADER_BYTES, false)) {
                repairAfterKilledWriter();
                checkCounters();
                T result = body.get();
                // Live slots stay under 3/4 and tombstones under 1/8, so an eighth of the table stays empty and
                // every probe sequence ends soon.
                if (map.getLong(TOMBSTONES_OFFSET) > capacity / 8) {
                    rebuild(clockMs.getAsLong());
                }
                LONGS.setRelease(map, DIRTY_SLOT_OFFSET, -1L);
                return result;
            }
        } catch (IOException e) {
            throw new RegistryException("cannot lock registry file " + file + ": " + e, e);
        } finally {
            jvmLock.unlock();
            if (interrupted) {
                Thread.currentThread().interrupt();
            }
        }
    }

    /**
     * A writer killed inside its locked section left the slot it was writing named in the header: that slot, if
     * still odd, becomes a tombstone, and the counters are recounted since the kill may have come between a
     * slot's write and its counter update.
     */
    private void repairAfterKilledWriter() {
        long dirty = (long) LONGS.getVolatile(map, DIRTY_SLOT_OFFSET);
        if (dirty < 0 || dirty >= capacity) {
            return;
        }
        int base = slotOffset(dirty);
        if ((map.getLong(base + SEQ) & 1) != 0) {
            LOG.warn("registry slot {} was left half-written by a killed process; repairing", dirty);
            map.putLong(base + STATE, STATE_TOMBSTONE);
            clearPins(base);
            LONGS.setRelease(map, base + SEQ, map.getLong(base + SEQ) + 1);
        }
        recount();
        LONGS.setRelease(map, DIRTY_SLOT_OFFSET, -1L);
    }

    /** Counters out of any possible range were damaged by some process of the user: recount rather than act on them. */
    private void checkCounters() {
        long live = map.getLong(LIVE_OFFSET);
        long tomb = map.getLong(TOMBSTONES_OFFSET);
        if (live < 0 || tomb < 0 || live > capacity - tomb) {
            LOG.warn("registry {} had impossible counters ({} live, {} tombstones of {} slots); recounting", file,
                    live, tomb, capacity);
            recount();
        }
    }

    private void recount() {
        long live = 0;
        long tomb = 0;
        for (long slot = 0; slot < capacity; slot++) {
            long state = map.getLong(slotOffset(slot) + STATE);
            live += state == STATE_LIVE ? 1 : 0;
            tomb += state == STATE_TOMBSTONE ? 1 : 0;
        }
        map.putLong(LIVE_OFFSET, live).putLong(TOMBSTONES_OFFSET, tomb);
    }

    /** One slot's fields, copied out; reused per thread so lookups allocate only the offers they return. */
    private static final class SlotView {
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
        long rawHandleLength;
        int handleLength;
        final byte[] handle = new byte[HANDLE_CAPACITY];

        void read(MappedByteBuffer m, int base) {
            state = m.getLong(base + STATE);
            keyHi = m.getLong(base + KEY_HI);
            keyLo = m.getLong(base + KEY_LO);
            ownerPid = m.getLong(base + OWNER_PID);
            ownerStart = m.getLong(base + OWNER_START);
            nodeId = m.getLong(base + NODE_ID);
            generation = m.getLong(base + GENERATION);
            leaseExpiry = (long) LONGS.getOpaque(m, base + LEASE_EXPIRY);
            chunkOffset = m.getLong(base + CHUNK_OFFSET);
            chunkLength = m.getLong(base + CHUNK_LENGTH);
            layoutFingerprint = m.getLong(base + LAYOUT_FINGERPRINT);
            rawHandleLength = m.getLong(base + HANDLE_LENGTH);
            handleLength = (int) Math.max(0, Math.min(HANDLE_CAPACITY, rawHandleLength));
            m.get(base + HANDLE, handle, 0, handleLength);
        }

        /** Fields within what {@link Offer} accepts, so {@link #toOffer} cannot fail. */
        boolean wellFormed() {
            return rawHandleLength >= 1 && rawHandleLength <= HANDLE_CAPACITY && chunkOffset >= 0 && chunkLength > 0
                    && ownerPid > 0;
        }

        boolean sameHandle(Offer offer) {
            byte[] other = offer.handle();
            return java.util.Arrays.equals(handle, 0, handleLength, other, 0, other.length);
        }

        Offer toOffer() {
            byte[] h = java.util.Arrays.copyOf(handle, handleLength);
            try {
                return new Offer(new ChunkKey(keyHi, keyLo), nodeId, new ProcessIdentity(ownerPid, ownerStart), h,
                        chunkOffset, chunkLength, layoutFingerprint, generation, leaseExpiry);
            } catch (IllegalArgumentException corrupted) {
                throw new RegistryException("registry slot holds a malformed offer: " + corrupted.getMessage());
            }
        }
    }
}
