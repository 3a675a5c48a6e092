package io.kvmarket;

import io.kvmarket.device.Device;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.key.Namespace;
import io.kvmarket.key.PrefixHasher;
import io.kvmarket.kv.ChunkFormat;
import io.kvmarket.kv.PagedKvCache;
import io.kvmarket.node.NodeId;
import io.kvmarket.pool.ExportPool;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.registry.Registries;
import io.kvmarket.transfer.Transport;
import io.kvmarket.transfer.Transports;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;

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
 * (wrong block counts, tokens outside the array) throw. Thread-safe. The facade checks arguments and keeps the
 * lifecycle; an {@link Importer}, an {@link Exporter} and a {@link LeaseKeeper} do the work.
 */
public final class KvMarketplace implements AutoCloseable {

    private static final Logger LOG = LoggerFactory.getLogger(KvMarketplace.class);
    private static final long DEFAULT_POOL_CHUNKS = 64;
    private static final long DEFAULT_POOL_CAP_BYTES = 1L << 30;

    private final MarketplaceContext ctx;
    private final ExportPool pool;
    private final Importer importer;
    private final Exporter exporter;
    private final LeaseKeeper leaseKeeper;
    private final Handoffs handoffs;
    private final OperationGate gate = new OperationGate();
    private final Shutdown shutdown;

    private KvMarketplace(Builder b) {
        if (!b.namespace.layout().equals(b.kvCache.layout())) {
            throw new IllegalArgumentException("KV cache layout " + b.kvCache.layout()
                    + " differs from the namespace layout " + b.namespace.layout());
        }
        ChunkFormat format = new ChunkFormat(b.namespace.layout(), b.chunkTokens);
        PrefixHasher hasher = new PrefixHasher(b.namespace, b.chunkTokens);
        long budget = b.poolBytes > 0 ? b.poolBytes
                : Math.max(format.chunkBytes(), Math.min(DEFAULT_POOL_CHUNKS * format.chunkBytes(), DEFAULT_POOL_CAP_BYTES));
        // Opened last of what can fail on bad arguments; whatever was opened is closed again if the rest fails.
        List<AutoCloseable> owned = new ArrayList<>();
        OfferRegistry registry = b.registry != null ? b.registry : Registries.open();
        if (b.registry == null) {
            owned.add(registry);
        }
        try {
            List<Transport> transports = b.transports != null ? List.copyOf(b.transports)
                    : Transports.openAvailable(b.device, NodeId.local(), b.offerLeaseMs);
            if (b.transports == null) {
                owned.addAll(0, transports);
            }
            this.ctx = new MarketplaceContext(b.namespace, b.kvCache, b.device, registry, transports, hasher, format,
                    PrefixHasher.layoutFingerprint(b.namespace.layout()), b.pinLeaseMs, b.offerLeaseMs,
                    new MarketplaceMetrics(), b.prefillCost);
            this.pool = new ExportPool(b.device, registry, budget, format.chunkBytes());
            owned.add(0, pool); // freed first, before what the builder opened
            this.exporter = new Exporter(ctx, pool, gate::isClosed);
        } catch (RuntimeException | Error e) {
            for (AutoCloseable c : owned) {
                try {
                    c.close();
                } catch (Exception suppressed) {
                    e.addSuppressed(suppressed);
                }
            }
            throw e;
        }
        this.importer = new Importer(ctx, pool);
        this.leaseKeeper = new LeaseKeeper(ctx, pool);
        this.handoffs = new Handoffs(ctx);
        this.shutdown = new Shutdown(gate, leaseKeeper, exporter, owned);
        LOG.info("kvmarket ready: device {}, registry {}, pool {} chunks of {} bytes, chunk {} tokens",
                b.device.name(), ctx.registry().getClass().getSimpleName(), pool.capacityChunks(), format.chunkBytes(),
                b.chunkTokens);
    }

    public static Builder builder() {
        return new Builder();
    }

    public Namespace namespace() {
        return ctx.namespace();
    }

    public int chunkTokens() {
        return ctx.format().chunkTokens();
    }

    public PrefixHasher hasher() {
        return ctx.hasher();
    }

    public ExportPool pool() {
        return pool;
    }

    public MarketplaceMetrics metrics() {
        return ctx.metrics();
    }

    /**
     * Finds the longest prefix of the first {@code tokenCount} tokens whose chunks are offered, and pins those
     * offers for the pin lease. An engine that must still compute the last prompt token's logits passes
     * {@code promptLength - 1}.
     */
    public Match match(int[] tokens, int tokenCount) {
        ChunkKey[] keys = ctx.hasher().keys(tokens, tokenCount);
        gate.enter();
        try {
            return importer.match(this, keys);
        } finally {
            gate.exit();
        }
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
        checkBlocks(blockIds, match.tokens() / ctx.namespace().layout().tokensPerBlock(), "the match needs");
        gate.enter();
        if (!match.released.compareAndSet(false, true)) {
            gate.exit();
            throw new IllegalStateException("match already loaded or released: " + match);
        }
        CompletableFuture<LoadResult> loaded;
        try {
            loaded = importer.load(match, blockIds);
        } catch (RuntimeException | Error e) { // a transport's own bug: nothing may stay pinned or counted
            importer.unpinAll(match.offers());
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

    /**
     * Releases the pins of a match that will not be loaded. Idempotent; a no-op after {@link #load}; allowed after
     * {@link #close}.
     *
     * @throws IllegalArgumentException when the match was made by another marketplace
     */
    public void release(Match match) {
        checkIssuer(match);
        if (match.released.compareAndSet(false, true)) {
            importer.unpinAll(match.offers());
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
     * @throws IllegalStateException    when this marketplace is closed, or when called from a load's callback
     */
    public ExportResult export(int[] tokens, int tokenCount, int[] blockIds) {
        if (OperationGate.inCompletion()) {
            throw new IllegalStateException("export() waits for its copy, which may need the very thread that "
                    + "completes a load: call it outside the load's callbacks (use an async variant, e.g. thenRunAsync)");
        }
        ChunkKey[] keys = ctx.hasher().keys(tokens, tokenCount);
        checkBlocks(blockIds, keys.length * ctx.format().blocksPerChunk(), "that hold " + keys.length + " full chunks");
        gate.enter();
        try {
            return exporter.export(keys, blockIds);
        } finally {
            gate.exit();
        }
    }

    /**
     * Decode side of a prefill/decode split: opens the blocks that will hold the KV of a prompt's first
     * {@code tokens} tokens to one push from a prefill server, for {@code timeoutMillis}. Hand the returned
     * {@link Handoff#ticket()} to that server, which calls {@link #handOff}; decode once {@link Handoff#landed()}
     * completes (or prefill here when it fails).
     *
     * @param blockIds the request's block table covering the prompt's blocks (the last one may be part full)
     * @throws IllegalArgumentException when the block table is too short or names blocks outside the cache
     * @throws IllegalStateException    when no transport of this marketplace can push (RDMA unavailable), or it is
     *                                  closed
     */
    public Handoff expectHandoff(int[] blockIds, int tokens, long timeoutMillis) {
        checkHandoffBlocks(blockIds, tokens);
        gate.enter();
        try {
            return handoffs.expect(blockIds, tokens, timeoutMillis);
        } finally {
            gate.exit();
        }
    }

    /**
     * Prefill side of a prefill/decode split: after prefill, writes the KV of the prompt's first {@code tokens}
     * tokens from the engine's blocks into the decode server's blocks the ticket names, straight from device memory
     * to device memory. Synchronize the prefill's stream first (as for {@link #export}). The engine may reuse its
     * blocks once the future completes.
     *
     * @throws IllegalArgumentException for a ticket of another model, revision or KV layout, of another prompt size,
     *                                  or malformed; or a block table too short or naming blocks outside the cache
     * @throws IllegalStateException    when no transport of this marketplace can push, or it is closed
     */
    public CompletableFuture<Void> handOff(byte[] ticket, int[] blockIds, int tokens) {
        checkHandoffBlocks(blockIds, tokens);
        gate.enter();
        try {
            return handoffs.handOff(ticket, blockIds, tokens);
        } finally {
            gate.exit();
        }
    }

    private void checkHandoffBlocks(int[] blockIds, int tokens) {
        checkBlocks(blockIds, handoffs.blocks(tokens), "the prompt's tokens fill");
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
        int numBlocks = ctx.kvCache().numBlocks();
        for (int i = 0; i < blocksNeeded; i++) {
            if (blockIds[i] < 0 || blockIds[i] >= numBlocks) {
                throw new IllegalArgumentException("block id " + blockIds[i] + " at " + i + " outside [0, "
                        + numBlocks + ")");
            }
        }
    }

    /** Renews the leases of this process's offers and drops mappings of dead or idle peers, now. */
    void housekeep() {
        leaseKeeper.renew();
    }

    /**
     * Refuses further matches, loads and exports, withdraws this marketplace's offers at once, waits for the
     * operations still running, then frees the pool and closes what the builder opened (default registry and
     * transports). Idempotent; a call while another is closing returns when that one has.
     *
     * <p>Waiting is bounded by 10 s and skipped when close() runs in a load's callback (of any marketplace: they
     * complete on a device's thread, which the operations it would wait for may need) or on an interrupted thread.
     * The pool is then freed by the last running operation as it ends, never under a running copy; the offers are
     * withdrawn before close() returns in every case, and handoffs still awaited are withdrawn first.
     */
    @Override
    public void close() {
        handoffs.closeAll(); // no push lands in a closed marketplace's blocks
        shutdown.close();
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
        private PrefillCost prefillCost;

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

        /**
         * Default: the available registry of the widest scope on the class path ({@link Registries}): the
         * node-local one in the node directory unless a cluster registry is configured. A registry given here stays
         * the caller's to close.
         */
        public Builder registry(OfferRegistry registry) {
            this.registry = registry;
            return this;
        }

        /**
         * Transports, closest route first; default: one of every available
         * {@link io.kvmarket.transfer.TransportProvider} on the class path ({@link Transports}), at least the device
         * IPC transport, each dropping what a peer left unused for one offer lease. Transports given here stay the caller's to close, as a given registry does;
         * the default ones close with the marketplace.
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

        /**
         * What prefilling costs this engine: with it, a match stops where moving the rest of the prefix would take
         * longer than recomputing it ({@link MissReason#SLOWER_THAN_PREFILL}). Default: none, every offered chunk
         * is imported.
         */
        public Builder prefillCost(PrefillCost cost) {
            this.prefillCost = cost;
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
