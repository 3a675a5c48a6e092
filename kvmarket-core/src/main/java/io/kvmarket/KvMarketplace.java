package io.kvmarket;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.device.Device;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.key.Namespace;
import io.kvmarket.key.PrefixHasher;
import io.kvmarket.kv.ChunkFormat;
import io.kvmarket.kv.PagedKvCache;
import io.kvmarket.node.NodeId;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.pool.ExportPool;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.registry.PublishOutcome;
import io.kvmarket.registry.RegistryException;
import io.kvmarket.registry.shm.NodeLocalRegistry;
import io.kvmarket.transfer.DeviceIpcTransport;
import io.kvmarket.transfer.TransferException;
import io.kvmarket.transfer.Transport;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.ReentrantReadWriteLock;

/**
 * The engine-facing API, shaped like vLLM's KV connector:
 * <ol>
 *   <li>{@link #match}: before prefill, how many prompt tokens can be imported; pins what it found, copies nothing;</li>
 *   <li>{@link #load}: copies the matched chunks into the blocks the engine allocated, one batched copy per
 *       source, then checks each source chunk's generation; completes with the tokens actually imported;</li>
 *   <li>{@link #export}: after prefill, copies the prompt's full chunks into the export pool and offers them;</li>
 *   <li>{@link #release}: drops the pins of a match that will not be loaded.</li>
 * </ol>
 * Every runtime failure on the import path is a miss with a {@link MissReason}, logged; only programming errors
 * (wrong block counts, tokens outside the array) throw. Thread-safe.
 */
public final class KvMarketplace implements AutoCloseable {

    private static final Logger LOG = LoggerFactory.getLogger(KvMarketplace.class);
    private static final long DEFAULT_POOL_CHUNKS = 64;
    private static final long DEFAULT_POOL_CAP_BYTES = 1L << 30;
    /** How long close() waits for running exports and loads before it keeps the pool's memory instead of freeing it. */
    private static final long CLOSE_WAIT_MS = 10_000;

    private final Namespace namespace;
    private final PagedKvCache kvCache;
    private final Device device;
    private final OfferRegistry registry;
    private final List<Transport> transports;
    private final PrefixHasher hasher;
    private final ChunkFormat format;
    private final ExportPool pool;
    private final long layoutFingerprint;
    private final long pinLeaseMs;
    private final long offerLeaseMs;
    private final ProcessIdentity self = ProcessIdentity.current();
    private final long nodeId = NodeId.local();
    private final MarketplaceMetrics metrics = new MarketplaceMetrics();
    private final ScheduledExecutorService housekeeping;
    private final boolean ownsRegistry;
    private final OperationGate gate = new OperationGate();
    /** Completes when the first close() has withdrawn everything and released, or handed off, the resources. */
    private final CompletableFuture<Void> closed = new CompletableFuture<>();
    /** Completes when the first close() has withdrawn this marketplace's offers. */
    private final CompletableFuture<Void> withdrawn = new CompletableFuture<>();
    private final boolean ownsTransports;
    /** Read-held while an export publishes, write-held while close withdraws: nothing is published behind close. */
    private final ReentrantReadWriteLock publishing = new ReentrantReadWriteLock();

    private KvMarketplace(Builder b) {
        this.namespace = b.namespace;
        this.kvCache = b.kvCache;
        if (!namespace.layout().equals(kvCache.layout())) {
            throw new IllegalArgumentException("KV cache layout " + kvCache.layout()
                    + " differs from the namespace layout " + namespace.layout());
        }
        this.device = b.device;
        this.hasher = new PrefixHasher(namespace, b.chunkTokens);
        this.format = new ChunkFormat(namespace.layout(), b.chunkTokens);
        this.layoutFingerprint = PrefixHasher.layoutFingerprint(namespace.layout());
        this.pinLeaseMs = b.pinLeaseMs;
        this.offerLeaseMs = b.offerLeaseMs;
        long budget = b.poolBytes > 0 ? b.poolBytes
                : Math.max(format.chunkBytes(), Math.min(DEFAULT_POOL_CHUNKS * format.chunkBytes(), DEFAULT_POOL_CAP_BYTES));
        // Opened last of what can fail on bad arguments, and closed again if the pool cannot be allocated.
        this.registry = b.registry != null ? b.registry : NodeLocalRegistry.openDefault();
        this.ownsRegistry = b.registry == null;
        this.ownsTransports = b.transports == null;
        this.transports = b.transports != null ? List.copyOf(b.transports)
                : List.of(new DeviceIpcTransport(device, nodeId, b.offerLeaseMs));
        try {
            this.pool = new ExportPool(device, registry, budget, format.chunkBytes());
        } catch (RuntimeException e) {
            if (ownsRegistry) {
                registry.close();
            }
            throw e;
        }
        this.housekeeping = Executors.newSingleThreadScheduledExecutor(r -> {
            Thread t = new Thread(r, "kvmarket-housekeeping");
            t.setDaemon(true);
            return t;
        });
        long period = Math.max(10, offerLeaseMs / 3);
        housekeeping.scheduleWithFixedDelay(this::housekeep, period, period, TimeUnit.MILLISECONDS);
        LOG.info("kvmarket ready: device {}, registry {}, pool {} chunks of {} bytes, chunk {} tokens",
                device.name(), registry.getClass().getSimpleName(), pool.capacityChunks(), format.chunkBytes(),
                b.chunkTokens);
    }

    public static Builder builder() {
        return new Builder();
    }

    public Namespace namespace() {
        return namespace;
    }

    public int chunkTokens() {
        return format.chunkTokens();
    }

    public PrefixHasher hasher() {
        return hasher;
    }

    public ExportPool pool() {
        return pool;
    }

    public MarketplaceMetrics metrics() {
        return metrics;
    }

    /**
     * Finds the longest prefix of the first {@code tokenCount} tokens whose chunks are offered, and pins those
     * offers for the pin lease. An engine that must still compute the last prompt token's logits passes
     * {@code promptLength - 1}.
     */
    public Match match(int[] tokens, int tokenCount) {
        ChunkKey[] keys = hasher.keys(tokens, tokenCount);
        gate.enter();
        try {
            return matchKeys(keys);
        } finally {
            gate.exit();
        }
    }

    private Match matchKeys(ChunkKey[] keys) {
        metrics.matches.increment();
        if (keys.length == 0) {
            return new Match(this, List.of(), format.chunkTokens(), MissReason.PROMPT_TOO_SHORT);
        }
        List<Offer> found;
        try {
            found = registry.lookupPrefix(keys, keys.length);
        } catch (RuntimeException e) { // a registry failure of any kind is a miss
            return miss(List.of(), MissReason.REGISTRY_UNAVAILABLE, e.toString());
        }
        List<Offer> usable = new ArrayList<>(found.size());
        MissReason reason = found.size() == keys.length ? MissReason.NONE : MissReason.NO_OFFER;
        String detail = "";
        try {
            for (Offer o : found) {
                MissReason bad = check(o);
                if (bad != MissReason.NONE) {
                    reason = bad;
                    detail = o.toString();
                    break;
                }
                boolean pinned;
                try {
                    pinned = registry.pin(o, pinLeaseMs);
                } catch (RuntimeException e) { // a registry failure of any kind is a miss
                    pinned = false;
                }
                if (!pinned) {
                    reason = MissReason.PIN_FAILED;
                    detail = o.toString();
                    break;
                }
                usable.add(o);
            }
        } catch (RuntimeException | Error e) { // a transport's reaches() failed: a bug, but no pin may outlive it
            unpinAll(usable);
            throw e;
        }
        if (reason != MissReason.NONE && reason != MissReason.NO_OFFER) {
            return miss(usable, reason, detail);
        }
        // Deepest chunk first, so a prefix's root ends up the most recently used and eviction takes tails first:
        // imports are prefix-closed, and a chunk whose predecessor was evicted can never be imported again.
        for (int i = usable.size() - 1; i >= 0; i--) {
            if (usable.get(i).owner().equals(self)) {
                pool.touch(usable.get(i).key());
            }
        }
        return new Match(this, usable, format.chunkTokens(), reason);
    }

    private Match miss(List<Offer> pinned, MissReason reason, String detail) {
        metrics.miss(reason);
        LOG.info("match stopped after {} chunks: {} {}", pinned.size(), reason, detail);
        return new Match(this, pinned, format.chunkTokens(), reason);
    }

    private MissReason check(Offer o) {
        if (o.layoutFingerprint() != layoutFingerprint) {
            return MissReason.LAYOUT_MISMATCH;
        }
        if (o.length() != format.chunkBytes() || o.offset() > Long.MAX_VALUE - o.length()) {
            return MissReason.MALFORMED_OFFER;
        }
        return transportFor(o) == null ? MissReason.NO_TRANSPORT : MissReason.NONE;
    }

    private Transport transportFor(Offer o) {
        for (Transport t : transports) {
            if (t.reaches(o)) {
                return t;
            }
        }
        return null;
    }

    /**
     * Copies the matched chunks into the engine's blocks and releases the match's pins.
     *
     * @param blockIds the request's block table; its first {@code match.tokens() / tokensPerBlock} entries receive
     *                 the imported KV
     * @return completes with the tokens imported; never exceptionally for runtime failures. It completes on the
     *         thread that finished the copy, a device's completion thread: actions attached to it must not block
     *         on this or another marketplace ({@link #export} from them throws), so use the async variants
     *         ({@code thenRunAsync}) for anything that waits
     * @throws IllegalArgumentException when the match was made by another marketplace, or the block table is too
     *                                  short or names blocks outside the cache
     * @throws IllegalStateException    when the match was already loaded or released, or this marketplace is closed
     */
    public CompletableFuture<LoadResult> load(Match match, int[] blockIds) {
        checkIssuer(match);
        checkBlocks(blockIds, match.tokens() / namespace.layout().tokensPerBlock(), "the match needs");
        gate.enter();
        if (!match.released.compareAndSet(false, true)) {
            gate.exit();
            throw new IllegalStateException("match already loaded or released: " + match);
        }
        CompletableFuture<LoadResult> loaded;
        try {
            loaded = loadPinned(match, blockIds);
        } catch (RuntimeException | Error e) { // a transport's own bug: nothing may stay pinned or counted
            unpinAll(match.offers());
            gate.exit();
            throw e;
        }
        // The gate is left before the engine's callbacks run, and they run marked, so that a close() from one of
        // them neither waits for this load nor for others that may need this very thread.
        CompletableFuture<LoadResult> result = new CompletableFuture<>();
        loaded.whenComplete((r, e) -> {
            try {
                gate.exit();
            } finally {
                OperationGate.completeMarked(result, r, e);
            }
        });
        return result;
    }

    private void checkIssuer(Match match) {
        if (match.issuer != this) {
            throw new IllegalArgumentException(match + " was made by another marketplace; load or release it there");
        }
    }

    /** Programming errors in a block table, checked before anything is reserved, pinned or consumed. */
    private void checkBlocks(int[] blockIds, int blocksNeeded, String what) {
        if (blockIds.length < blocksNeeded) {
            throw new IllegalArgumentException("block table of " + blockIds.length + " blocks is shorter than the "
                    + blocksNeeded + " " + what);
        }
        for (int i = 0; i < blocksNeeded; i++) {
            if (blockIds[i] < 0 || blockIds[i] >= kvCache.numBlocks()) {
                throw new IllegalArgumentException("block id " + blockIds[i] + " at " + i + " outside [0, "
                        + kvCache.numBlocks() + ")");
            }
        }
    }

    private CompletableFuture<LoadResult> loadPinned(Match match, int[] blockIds) {
        metrics.loads.increment();
        List<Offer> offers = match.offers();
        if (offers.isEmpty()) {
            return CompletableFuture.completedFuture(new LoadResult(0, 0, match.reason(), ""));
        }
        // One batch per source buffer: chunks from the same exporter's pool travel in one submission.
        Map<ByteBuffer, SourcePlan> plans = new LinkedHashMap<>();
        // Cannot throw: the block table was checked above, and match() admitted only offers whose span fits.
        for (int i = 0; i < offers.size(); i++) {
            Offer o = offers.get(i);
            SourcePlan plan = plans.computeIfAbsent(ByteBuffer.wrap(o.handle()), h -> new SourcePlan(o));
            plan.firstChunk = Math.min(plan.firstChunk, i);
            format.addChunk(plan.batch, kvCache, blockIds, i, o.offset(), true);
        }
        List<CompletableFuture<SourceOutcome>> copies = new ArrayList<>(plans.size());
        for (SourcePlan plan : plans.values()) {
            Transport t = transportFor(plan.representative);
            CompletableFuture<Void> copy;
            try {
                copy = t.fetch(plan.representative, kvCache.buffer(), plan.batch.build());
            } catch (RuntimeException e) {
                copy = CompletableFuture.failedFuture(e);
            }
            copies.add(copy.handle((ok, error) -> error == null ? SourceOutcome.DELIVERED
                    : SourceOutcome.failed(plan.firstChunk, error)));
        }
        return CompletableFuture.allOf(copies.toArray(new CompletableFuture<?>[0])).thenApply(ignored -> {
            int delivered = offers.size();
            MissReason reason = match.reason();
            String detail = "";
            for (CompletableFuture<SourceOutcome> c : copies) {
                SourceOutcome outcome = c.join();
                if (outcome.firstBadChunk < delivered) {
                    delivered = outcome.firstBadChunk;
                    reason = outcome.reason;
                    detail = outcome.detail;
                }
            }
            // Generation check after the copy: a chunk withdrawn or replaced meanwhile may have been overwritten.
            for (int i = 0; i < delivered; i++) {
                boolean current;
                try {
                    current = registry.isCurrent(offers.get(i));
                } catch (RuntimeException e) { // cannot prove the bytes unchanged: a miss
                    current = false;
                }
                if (!current) {
                    delivered = i;
                    reason = MissReason.SOURCE_CHANGED;
                    detail = offers.get(i).toString();
                    break;
                }
            }
            unpinAll(offers);
            int tokens = delivered * format.chunkTokens();
            metrics.tokensImported.add(tokens);
            metrics.bytesImported.add(delivered * format.chunkBytes());
            if (delivered < offers.size()) {
                metrics.miss(reason);
                LOG.info("load delivered {} of {} chunks: {} {}", delivered, offers.size(), reason, detail);
            }
            return new LoadResult(tokens, match.tokens(), reason, detail);
        });
    }

    /**
     * Releases the pins of a match that will not be loaded. Idempotent; a no-op after {@link #load}; allowed after
     * {@link #close}.
     *
     * @throws IllegalArgumentException when the match was made by another marketplace
     */
    public void release(Match match) {
        checkIssuer(match);
        if (match.released.compareAndSet(false, true)) {
            unpinAll(match.offers());
        }
    }

    private void unpinAll(List<Offer> offers) {
        for (Offer o : offers) {
            try {
                registry.unpin(o);
            } catch (RuntimeException e) {
                LOG.debug("unpin of {} failed; the pin lapses with its lease: {}", o, e.getMessage());
            }
        }
    }

    /**
     * After prefill: copies the full chunks of the first {@code tokenCount} tokens from the engine's blocks into
     * the export pool in one batched copy and offers them. Chunks already offered by anyone are skipped. Returns
     * once the copy is done, so the engine may reuse its blocks at once. The KV must be complete in device memory
     * when this is called: the copy runs on the device's own stream, which does not wait for the engine's streams
     * (on a GPU, synchronize the prefill's stream first).
     *
     * @param blockIds the request's block table covering at least the full chunks
     * @throws IllegalArgumentException when the block table is too short or names blocks outside the cache; the
     *                                  pool and the registry are then as they were
     * @throws IllegalStateException    when this marketplace is closed
     */
    public ExportResult export(int[] tokens, int tokenCount, int[] blockIds) {
        if (OperationGate.inCompletion()) {
            throw new IllegalStateException("export() waits for its copy, which may need the very thread that "
                    + "completes a load: call it outside the load's callbacks (use an async variant, e.g. thenRunAsync)");
        }
        ChunkKey[] keys = hasher.keys(tokens, tokenCount);
        checkBlocks(blockIds, keys.length * format.blocksPerChunk(), "that hold " + keys.length + " full chunks");
        gate.enter();
        try {
            return exportKeys(keys, blockIds);
        } finally {
            gate.exit();
        }
    }

    private ExportResult exportKeys(ChunkKey[] keys, int[] blockIds) {
        List<Integer> fresh = new ArrayList<>();
        boolean[] ownOffered = new boolean[keys.length];
        int already = 0;
        try {
            for (int i = 0; i < keys.length; i++) {
                Offer existing = registry.lookup(keys[i]);
                if (existing == null) {
                    fresh.add(i);
                } else {
                    already++;
                    ownOffered[i] = existing.owner().equals(self);
                }
            }
        } catch (RegistryException e) {
            return skippedExport(0, already, keys.length - already, "registry unavailable: " + e.getMessage());
        }
        // Touched now so the reservation below does not evict them, and again once the new chunks are recorded.
        for (int i = keys.length - 1; i >= 0; i--) {
            if (ownOffered[i]) {
                pool.touch(keys[i]);
            }
        }
        if (fresh.isEmpty()) {
            metrics.chunksAlreadyOffered.add(already);
            return new ExportResult(0, already, 0, "");
        }
        int[] slots = pool.reserve(fresh.size());
        if (slots.length == 0) {
            return skippedExport(0, already, fresh.size(), "export pool full of pinned or filling chunks");
        }
        // Every reserved slot is either published below or returned, whatever fails in between.
        int unsettled = 0;
        int published = 0;
        String skipReason = slots.length < fresh.size() ? "export pool full of pinned or filling chunks" : "";
        try {
            CopyBatch.Builder batch = CopyBatch.builder();
            for (int s = 0; s < slots.length; s++) {
                format.addChunk(batch, kvCache, blockIds, fresh.get(s), pool.offsetOf(slots[s]), false);
            }
            try {
                device.copy(kvCache.buffer(), pool.buffer(), batch.build()).join();
            } catch (RuntimeException e) {
                return skippedExport(0, already, fresh.size(), "copy into the pool failed: " + unwrap(e));
            }
            long expiry = OfferRegistry.expiry(registry.clockMillis(), offerLeaseMs);
            byte[] handle = pool.handle();
            Offer[] offeredAt = new Offer[keys.length];
            int[] slotAt = new int[keys.length];
            publishing.readLock().lock();
            try {
                if (gate.isClosed()) {
                    return skippedExport(0, already, fresh.size(), "marketplace closed during the export");
                }
                for (; unsettled < slots.length; unsettled++) {
                    int s = unsettled;
                    Offer offer = new Offer(keys[fresh.get(s)], nodeId, self, handle, pool.offsetOf(slots[s]),
                            format.chunkBytes(), layoutFingerprint, ExportPool.nextGeneration(), expiry);
                    PublishOutcome outcome;
                    try {
                        outcome = registry.publish(offer);
                    } catch (RegistryException e) {
                        outcome = null;
                        skipReason = "registry unavailable: " + e.getMessage();
                    }
                    if (outcome == PublishOutcome.PUBLISHED) {
                        offeredAt[fresh.get(s)] = offer;
                        slotAt[fresh.get(s)] = slots[s];
                        published++;
                    } else {
                        pool.unreserve(slots[s]);
                        if (outcome == PublishOutcome.ALREADY_OFFERED) {
                            already++;
                        } else if (outcome == PublishOutcome.REGISTRY_FULL) {
                            skipReason = "registry full";
                        }
                    }
                }
                // Deepest first over the whole prompt, as in match: the new chunks and the ones this pool already
                // held end up with the root most recent, whichever of them extend the other.
                for (int i = keys.length - 1; i >= 0; i--) {
                    if (offeredAt[i] != null) {
                        pool.published(slotAt[i], offeredAt[i]);
                    } else if (ownOffered[i]) {
                        pool.touch(keys[i]);
                    }
                }
            } finally {
                publishing.readLock().unlock();
            }
        } finally {
            for (int s = unsettled; s < slots.length; s++) {
                pool.unreserve(slots[s]);
            }
        }
        int skipped = keys.length - already - published;
        metrics.chunksExported.add(published);
        metrics.chunksAlreadyOffered.add(already);
        metrics.chunksExportSkipped.add(skipped);
        if (skipped > 0) {
            LOG.info("export skipped {} chunks: {}", skipped, skipReason);
        }
        return new ExportResult(published, already, skipped, skipped > 0 ? skipReason : "");
    }

    private ExportResult skippedExport(int published, int already, int skipped, String reason) {
        metrics.chunksAlreadyOffered.add(already);
        metrics.chunksExportSkipped.add(skipped);
        LOG.info("export skipped {} chunks: {}", skipped, reason);
        return new ExportResult(published, already, skipped, reason);
    }

    /** Renews the leases of this process's offers and drops mappings of dead or idle peers. */
    void housekeep() {
        long expiry = OfferRegistry.expiry(registry.clockMillis(), offerLeaseMs);
        for (Offer o : pool.publishedOffers()) {
            try {
                if (!registry.renew(o, expiry)) {
                    pool.lost(o);
                }
            } catch (RegistryException e) {
                LOG.warn("cannot renew {}: {}", o, e.getMessage());
            }
        }
        transports.forEach(Transport::evictStale);
    }

    /**
     * Refuses further matches, loads and exports, withdraws this marketplace's offers at once, waits for the
     * operations still running, then frees the pool and closes what the builder opened (default registry and
     * transports). Idempotent; a call while another is closing returns when that one has.
     *
     * <p>Waiting is bounded by {@value #CLOSE_WAIT_MS} ms and skipped when close() runs in a load's callback (of
     * any marketplace: they complete on a device's thread, which the operations it would wait for may need) or on
     * an interrupted thread. The pool is then freed by the last running operation as it ends, never under a
     * running copy; the offers are withdrawn before close() returns in every case.
     */
    @Override
    public void close() {
        if (!gate.close()) {
            awaitOtherClose();
            return;
        }
        try {
            housekeeping.shutdown();
            // Nothing is offered from here on: a running export sees the gate closed before it publishes.
            publishing.writeLock().lock();
            try {
                pool.withdrawAll();
            } finally {
                publishing.writeLock().unlock();
                withdrawn.complete(null);
            }
            if (!gate.releaseWhenIdle(this::releaseResources, CLOSE_WAIT_MS)) {
                LOG.info("close: offers withdrawn; the pool is freed when the running loads and exports end");
            }
        } finally {
            withdrawn.complete(null);
            closed.complete(null);
        }
    }

    private void awaitOtherClose() {
        withdrawn.join(); // soon: withdrawing waits for no operation
        if (OperationGate.inCompletion()) {
            return; // the first close may be waiting for this very thread
        }
        try {
            closed.get();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } catch (ExecutionException e) {
            throw new IllegalStateException("cannot happen: closed completes normally", e);
        }
    }

    /**
     * Runs once no operation runs, in close() or in the thread of the last operation to end: frees the pool and
     * closes what the builder opened. Each step's failure is logged and the others still run.
     */
    private void releaseResources() {
        awaitHousekeeping();
        List<AutoCloseable> owned = new ArrayList<>();
        owned.add(pool);
        if (ownsTransports) {
            owned.addAll(transports);
        }
        if (ownsRegistry) {
            owned.add(registry);
        }
        for (AutoCloseable c : owned) {
            try {
                c.close();
            } catch (Exception e) {
                LOG.warn("closing {} failed: {}", c, e.toString());
            }
        }
    }

    /** A renewal in flight finishes: interrupting it would only abort its registry write. */
    private void awaitHousekeeping() {
        boolean interrupted = Thread.interrupted();
        try {
            while (true) {
                try {
                    if (!housekeeping.awaitTermination(10, TimeUnit.SECONDS)) {
                        LOG.warn("lease renewal still running after 10 s at close");
                    }
                    return;
                } catch (InterruptedException e) {
                    interrupted = true;
                }
            }
        } finally {
            if (interrupted) {
                Thread.currentThread().interrupt();
            }
        }
    }

    /** How one source's copy ended: every chunk delivered, or the first chunk it could not deliver and why. */
    private record SourceOutcome(int firstBadChunk, MissReason reason, String detail) {
        static final SourceOutcome DELIVERED = new SourceOutcome(Integer.MAX_VALUE, MissReason.NONE, "");

        static SourceOutcome failed(int firstChunk, Throwable error) {
            Throwable cause = unwrap(error);
            MissReason reason = cause instanceof TransferException te ? te.reason() : MissReason.TRANSFER_FAILED;
            return new SourceOutcome(firstChunk, reason, String.valueOf(cause.getMessage()));
        }
    }

    /** The failure a {@link CompletionException} wraps, or the throwable itself. */
    private static Throwable unwrap(Throwable t) {
        return t instanceof CompletionException && t.getCause() != null ? t.getCause() : t;
    }

    private static final class SourcePlan {
        final Offer representative;
        final CopyBatch.Builder batch = CopyBatch.builder();
        int firstChunk = Integer.MAX_VALUE;

        SourcePlan(Offer representative) {
            this.representative = representative;
        }
    }

    /** Configures a marketplace. Namespace and KV cache are required; everything else has embedded defaults. */
    public static final class Builder {
        /** One hour. */
        public static final long MAX_PIN_LEASE_MS = 3_600_000;
        public static final long MIN_OFFER_LEASE_MS = 100;
        /** One day. */
        public static final long MAX_OFFER_LEASE_MS = 86_400_000;

        private Namespace namespace;
        private PagedKvCache kvCache;
        private Device device;
        private OfferRegistry registry;
        private List<Transport> transports;
        private int chunkTokens = 256;
        private long poolBytes;
        private long pinLeaseMs = 10_000;
        private long offerLeaseMs = 60_000;

        public Builder namespace(Namespace namespace) {
            this.namespace = namespace;
            return this;
        }

        /** The engine's paged KV cache; its buffer must come from {@link #device}. */
        public Builder kvCache(PagedKvCache kvCache) {
            this.kvCache = kvCache;
            return this;
        }

        /** The device the KV cache lives on ({@link io.kvmarket.device.Devices#open()} picks one). */
        public Builder device(Device device) {
            this.device = device;
            return this;
        }

        /** Default: the {@link NodeLocalRegistry} in the node directory. */
        public Builder registry(OfferRegistry registry) {
            this.registry = registry;
            return this;
        }

        /**
         * Transports tried in order; default: one {@link DeviceIpcTransport} over the device that unmaps a peer
         * buffer unused for one offer lease. Transports given here stay the caller's to close, as a given registry
         * does; the default one closes with the marketplace.
         */
        public Builder transports(List<Transport> transports) {
            this.transports = transports;
            return this;
        }

        /** Tokens per chunk, a multiple of the layout's tokens per block; default 256. */
        public Builder chunkTokens(int chunkTokens) {
            this.chunkTokens = chunkTokens;
            return this;
        }

        /** Export pool budget in bytes; default 64 chunks, at most 1 GiB (but at least one chunk). */
        public Builder poolBytes(long poolBytes) {
            if (poolBytes <= 0) {
                throw new IllegalArgumentException("poolBytes must be positive, was " + poolBytes);
            }
            this.poolBytes = poolBytes;
            return this;
        }

        /**
         * How long a match's pins hold if the engine never loads or releases it; default 10 s, at most
         * {@value #MAX_PIN_LEASE_MS} ms: the exporter cannot evict a pinned chunk, so a pin of an importer that died
         * holds pool memory that long.
         */
        public Builder pinLeaseMillis(long ms) {
            this.pinLeaseMs = within("pinLeaseMillis", ms, 1, MAX_PIN_LEASE_MS);
            return this;
        }

        /**
         * Lease of each offer, renewed every third of it while the process lives; default 60 s. At least
         * {@value #MIN_OFFER_LEASE_MS} ms, since renewals run at most every 10 ms, and at most
         * {@value #MAX_OFFER_LEASE_MS} ms, since an idle peer mapping is kept that long too.
         */
        public Builder offerLeaseMillis(long ms) {
            this.offerLeaseMs = within("offerLeaseMillis", ms, MIN_OFFER_LEASE_MS, MAX_OFFER_LEASE_MS);
            return this;
        }

        public KvMarketplace build() {
            if (namespace == null || kvCache == null) {
                throw new IllegalStateException("namespace and kvCache are required");
            }
            if (device == null) {
                throw new IllegalStateException("device is required: the KV cache lives on it");
            }
            return new KvMarketplace(this);
        }

        private static long within(String name, long v, long min, long max) {
            if (v < min || v > max) {
                throw new IllegalArgumentException(name + " must be in [" + min + ", " + max + "] ms, was " + v);
            }
            return v;
        }
    }
}
