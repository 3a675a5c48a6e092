package io.kvmarket;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.kv.ChunkFormat;
import io.kvmarket.kv.PagedKvCache;
import io.kvmarket.node.MappedFaults;
import io.kvmarket.pool.ExportPool;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.transfer.Route;
import io.kvmarket.transfer.TransferException;
import io.kvmarket.transfer.TransferFailure;
import io.kvmarket.transfer.Transport;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;

/**
 * The import side: {@link #match} finds and pins the longest offered prefix; {@link #load} copies it into the
 * engine's blocks, one batch per source through the closest, then cheapest, transport that reaches it, and checks
 * every chunk's publication after the copy, cutting the import at the first that changed. Runtime failures are
 * misses with a reason.
 */
final class Importer {

    private static final Logger LOG = LoggerFactory.getLogger(Importer.class);

    private final MarketplaceContext ctx;
    private final OfferRegistry registry;
    private final ChunkFormat format;
    private final PagedKvCache kvCache;
    private final MarketplaceMetrics metrics;
    private final ExportPool ownPool;
    private final TransferEstimates estimates = new TransferEstimates();

    /** @param ownPool this marketplace's pool: chunks imported from it count as its own use */
    Importer(MarketplaceContext ctx, ExportPool ownPool) {
        this.ctx = ctx;
        this.registry = ctx.registry();
        this.format = ctx.format();
        this.kvCache = ctx.kvCache();
        this.metrics = ctx.metrics();
        this.ownPool = ownPool;
    }

    Match match(Object issuer, ChunkKey[] keys) {
        try {
            return lookUpAndPin(issuer, keys);
        } catch (InternalError e) {
            MappedFaults.rethrowUnlessFault(e);
            // A registry file cut under its mapping: the JVM may report the fault only after the registry's call
            // returned, here. Pins taken before it lapse with their lease.
            return miss(issuer, List.of(), MissReason.REGISTRY_UNAVAILABLE, e.toString());
        }
    }

    private Match lookUpAndPin(Object issuer, ChunkKey[] keys) {
        metrics.matches.increment();
        if (keys.length == 0) {
            return new Match(issuer, List.of(), format.chunkTokens(), MissReason.PROMPT_TOO_SHORT);
        }
        List<Offer> found;
        try {
            found = registry.lookupPrefix(keys, keys.length);
        } catch (RuntimeException e) { // a registry failure of any kind is a miss
            return miss(issuer, List.of(), MissReason.REGISTRY_UNAVAILABLE, e.toString());
        }
        List<Offer> usable = new ArrayList<>(found.size());
        MissReason reason = found.size() == keys.length ? MissReason.NONE : MissReason.NO_OFFER;
        String detail = "";
        for (Offer o : found) { // before any pin, so a transport's failing route() leaves none behind
            MissReason bad = check(o);
            if (bad != MissReason.NONE) {
                reason = bad;
                detail = o.toString();
                break;
            }
            usable.add(o);
        }
        int worth = chunksWorthImporting(usable);
        if (worth < usable.size()) {
            reason = MissReason.SLOWER_THAN_PREFILL;
            detail = (usable.size() - worth) + " of " + usable.size() + " chunks would move slower than they recompute";
            usable = new ArrayList<>(usable.subList(0, worth));
        }
        // All pins in one call (one round trip to a remote registry); the prefix ends at the first that failed.
        boolean[] pinned = pinAll(usable);
        for (int i = 0; i < pinned.length; i++) {
            if (!pinned[i]) {
                reason = MissReason.PIN_FAILED;
                detail = usable.get(i).toString();
                List<Offer> beyond = new ArrayList<>();
                for (int j = i + 1; j < pinned.length; j++) {
                    if (pinned[j]) {
                        beyond.add(usable.get(j));
                    }
                }
                unpinAll(beyond);
                usable = new ArrayList<>(usable.subList(0, i));
                break;
            }
        }
        if (reason != MissReason.NONE && reason != MissReason.NO_OFFER) {
            return miss(issuer, usable, reason, detail);
        }
        // Deepest chunk first, so a prefix's root ends up the most recently used and eviction takes tails first:
        // imports are prefix-closed, and a chunk whose predecessor was evicted can never be imported again.
        for (int i = usable.size() - 1; i >= 0; i--) {
            if (usable.get(i).owner().equals(ctx.self())) {
                ownPool.touch(usable.get(i).key());
            }
        }
        return new Match(issuer, usable, format.chunkTokens(), reason);
    }

    private boolean[] pinAll(List<Offer> offers) {
        try {
            return registry.pinAll(offers, ctx.pinLeaseMs());
        } catch (RuntimeException e) { // a registry failure of any kind is a miss; stray pins lapse with the lease
            LOG.debug("pinning {} offers failed: {}", offers.size(), e.toString());
            return new boolean[offers.size()];
        }
    }

    private Match miss(Object issuer, List<Offer> pinned, MissReason reason, String detail) {
        metrics.miss(reason);
        LOG.info("match stopped after {} chunks: {} {}", pinned.size(), reason, detail);
        return new Match(issuer, pinned, format.chunkTokens(), reason);
    }

    private MissReason check(Offer o) {
        if (o.layoutFingerprint() != ctx.layoutFingerprint()) {
            return MissReason.LAYOUT_MISMATCH;
        }
        if (o.length() != format.chunkBytes() || o.offset() > Long.MAX_VALUE - o.length()) {
            return MissReason.MALFORMED_OFFER;
        }
        return transportFor(o) == null ? MissReason.NO_TRANSPORT : MissReason.NONE;
    }

    /**
     * How many of the offers, from the first, are worth importing: the most whose estimated transfer (each
     * source's transport, at its learned throughput) takes no longer than prefilling their tokens. All of them when
     * the engine gave no prefill cost.
     */
    private int chunksWorthImporting(List<Offer> offers) {
        PrefillCost cost = ctx.prefillCost();
        if (cost == null || offers.isEmpty()) {
            return offers.size();
        }
        Map<SourceKey, Long> bytes = new LinkedHashMap<>();
        Map<SourceKey, Route> routes = new LinkedHashMap<>();
        Map<SourceKey, Transport> transports = new LinkedHashMap<>();
        Map<SourceKey, Long> nodes = new LinkedHashMap<>();
        int worth = 0;
        for (int k = 1; k <= offers.size(); k++) {
            Offer o = offers.get(k - 1);
            Transport t = transportFor(o);
            Route route = t == null ? null : t.route(o).orElse(null);
            if (route == null) {
                break; // its route vanished since check(): nothing from here on can be planned
            }
            SourceKey source = new SourceKey(t, o.endpoints());
            routes.putIfAbsent(source, route);
            transports.putIfAbsent(source, t);
            nodes.putIfAbsent(source, o.nodeId());
            bytes.merge(source, o.length(), Math::addExact);
            long transfer = 0;
            for (Map.Entry<SourceKey, Long> e : bytes.entrySet()) {
                long one = estimates.estimateNanos(transports.get(e.getKey()), nodes.get(e.getKey()),
                        routes.get(e.getKey()), e.getValue());
                transfer = one > Long.MAX_VALUE - transfer ? Long.MAX_VALUE : transfer + one;
            }
            if (transfer <= cost.nanosToPrefill(Math.multiplyExact(k, format.chunkTokens()))) {
                worth = k;
            }
        }
        return worth;
    }

    /** The transport with the closest, then cheapest, route to the offer; null when none reaches it. */
    private Transport transportFor(Offer o) {
        Transport best = null;
        Route bestRoute = null;
        for (Transport t : ctx.transports()) {
            Route r = t.route(o).orElse(null);
            if (r != null && (bestRoute == null || r.locality().compareTo(bestRoute.locality()) < 0
                    || r.locality() == bestRoute.locality()
                    && r.estimateNanos(o.length()) < bestRoute.estimateNanos(o.length()))) {
                best = t;
                bestRoute = r;
            }
        }
        return best;
    }

    /**
     * Copies the match's pinned chunks into {@code blockIds} (checked by the caller) and releases the pins.
     * Completes with the tokens imported, never exceptionally for runtime failures.
     */
    CompletableFuture<LoadResult> load(Match match, int[] blockIds) {
        metrics.loads.increment();
        List<Offer> offers = match.offers();
        if (offers.isEmpty()) {
            return CompletableFuture.completedFuture(new LoadResult(0, 0, match.reason(), ""));
        }
        List<CompletableFuture<SourceOutcome>> copies = new ArrayList<>();
        List<SourcePlan> plans = plan(offers, blockIds);
        for (SourcePlan plan : plans) {
            CompletableFuture<Void> copy;
            try {
                copy = plan.transport == null
                        ? CompletableFuture.failedFuture(new TransferException(TransferFailure.UNREACHABLE,
                                "no transport reaches " + plan.chunks.get(0) + " any more"))
                        : timed(plan.transport, plan.batch.build(), plan.chunks);
            } catch (RuntimeException e) {
                copy = CompletableFuture.failedFuture(e);
            }
            copies.add(copy.handle((ok, error) -> error == null ? SourceOutcome.DELIVERED
                    : SourceOutcome.failed(plan.indices, error)));
        }
        return CompletableFuture.allOf(copies.toArray(new CompletableFuture<?>[0]))
                .thenApply(ignored -> settle(match, offers, plans, copies));
    }

    /** Fetches, and learns the transport's throughput from how long the fetch took. */
    private CompletableFuture<Void> timed(Transport t, CopyBatch batch, List<Offer> chunks) {
        long start = System.nanoTime();
        long nodeId = chunks.get(0).nodeId();
        return t.fetch(List.copyOf(chunks), kvCache.buffer(), batch).whenComplete((ok, error) -> {
            if (error == null) {
                estimates.record(t, nodeId, batch.totalBytes(), System.nanoTime() - start);
            }
        });
    }

    /** One batch per source: chunks of the same exporter's pool travel in one submission of one transport. */
    private List<SourcePlan> plan(List<Offer> offers, int[] blockIds) {
        Map<SourceKey, SourcePlan> plans = new LinkedHashMap<>();
        for (int i = 0; i < offers.size(); i++) {
            Offer o = offers.get(i);
            Transport t = transportFor(o);
            if (t == null) { // a user transport's route changed since match(): a prefix-closed miss from here
                SourcePlan unreachable = new SourcePlan(null);
                unreachable.add(o, i);
                plans.put(new SourceKey(null, List.of()), unreachable);
                break;
            }
            SourcePlan plan = plans.computeIfAbsent(new SourceKey(t, o.endpoints()), k -> new SourcePlan(t));
            plan.add(o, i);
            // Cannot throw: the caller checked the block table, and match() admitted only offers whose span fits.
            format.addChunk(plan.batch, kvCache, blockIds, i, o.offset(), true);
        }
        return new ArrayList<>(plans.values());
    }

    /** After every copy: the first chunk not delivered or changed since match() ends the import. */
    private LoadResult settle(Match match, List<Offer> offers, List<SourcePlan> plans,
                              List<CompletableFuture<SourceOutcome>> copies) {
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
        // Generation check after the copy (a chunk withdrawn or replaced meanwhile may have been overwritten), and
        // every pin released, in one call.
        boolean[] current = releaseCurrent(offers);
        if (current == null && delivered > 0) {
            delivered = 0;
            reason = MissReason.REGISTRY_UNAVAILABLE;
            detail = "the check after the copy failed";
        }
        for (int i = 0; i < delivered; i++) {
            if (!current[i]) {
                delivered = i;
                reason = MissReason.SOURCE_CHANGED;
                detail = offers.get(i).toString();
                break;
            }
        }
        int tokens = delivered * format.chunkTokens();
        metrics.tokensImported.add(tokens);
        metrics.bytesImported.add(delivered * format.chunkBytes());
        if (delivered < offers.size()) {
            metrics.miss(reason);
            LOG.info("load delivered {} of {} chunks: {} {}", delivered, offers.size(), reason, detail);
        }
        return new LoadResult(tokens, match.tokens(), reason, detail, transportsOf(plans, delivered));
    }

    /** The names of the transports that delivered some of the first {@code delivered} chunks, in plan order. */
    private static String transportsOf(List<SourcePlan> plans, int delivered) {
        List<String> names = new ArrayList<>(2);
        for (SourcePlan p : plans) {
            if (p.transport != null && !p.indices.isEmpty() && p.indices.get(0) < delivered
                    && !names.contains(p.transport.name())) {
                names.add(p.transport.name());
            }
        }
        return String.join("+", names);
    }

    /** Which offers were current as their pins were released; null when the registry failed to tell. */
    private boolean[] releaseCurrent(List<Offer> offers) {
        try {
            return registry.releaseCurrent(offers);
        } catch (RuntimeException | InternalError e) { // cannot prove the bytes unchanged: a miss; pins lapse
            MappedFaults.rethrowUnlessFault(e);
            LOG.debug("checking and unpinning {} offers failed: {}", offers.size(), e.getMessage());
            return null;
        }
    }

    void unpinAll(List<Offer> offers) {
        if (offers.isEmpty()) {
            return;
        }
        try {
            registry.unpinAll(offers);
        } catch (RuntimeException | InternalError e) {
            MappedFaults.rethrowUnlessFault(e);
            LOG.debug("unpinning {} offers failed; the pins lapse with their lease: {}", offers.size(), e.getMessage());
        }
    }

    /** A source: one transport reading one exporter's pool, which its endpoints name. */
    private record SourceKey(Transport transport, List<Endpoint> endpoints) {
    }

    /** The chunks one source serves, in import order, with their places in the import. */
    private static final class SourcePlan {
        final Transport transport;
        final List<Offer> chunks = new ArrayList<>();
        final List<Integer> indices = new ArrayList<>();
        final CopyBatch.Builder batch = CopyBatch.builder();

        SourcePlan(Transport transport) {
            this.transport = transport;
        }

        void add(Offer chunk, int index) {
            chunks.add(chunk);
            indices.add(index);
        }
    }

    /** How one source's copy ended: every chunk delivered, or the first chunk it could not deliver and why. */
    private record SourceOutcome(int firstBadChunk, MissReason reason, String detail) {
        static final SourceOutcome DELIVERED = new SourceOutcome(Integer.MAX_VALUE, MissReason.NONE, "");

        /** @param indices the source's chunks' places in the import; those it delivered before failing count */
        static SourceOutcome failed(List<Integer> indices, Throwable error) {
            Throwable cause = error instanceof CompletionException && error.getCause() != null ? error.getCause() : error;
            MissReason reason = cause instanceof TransferException te ? MissReason.of(te.failure())
                    : MissReason.TRANSFER_FAILED;
            // A failed fetch delivered one chunk fewer than it had at most, whatever a transport claims.
            int delivered = cause instanceof TransferException te
                    ? Math.min(te.chunksDelivered(), indices.size() - 1) : 0;
            return new SourceOutcome(indices.get(delivered), reason, String.valueOf(cause.getMessage()));
        }
    }
}
