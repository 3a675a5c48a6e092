package io.kvmarket;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.kv.ChunkFormat;
import io.kvmarket.pool.ExportPool;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.registry.PublishOutcome;
import io.kvmarket.registry.RegistryException;
import io.kvmarket.transfer.Transport;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.CompletionException;
import java.util.concurrent.locks.ReentrantReadWriteLock;
import java.util.function.BooleanSupplier;

/**
 * The export side: copies a prompt's new full chunks from the engine's blocks into a pool reservation in one
 * batched copy, then publishes an offer for each, carrying the endpoints the transports advertise for the pool.
 * Publishing holds a read lock that {@link #withdrawAll} takes for writing, so nothing is published behind a
 * closing marketplace's withdrawal.
 */
final class Exporter {

    private static final Logger LOG = LoggerFactory.getLogger(Exporter.class);
    private static final String POOL_FULL = "export pool full of pinned or filling chunks";

    private final MarketplaceContext ctx;
    private final OfferRegistry registry;
    private final ChunkFormat format;
    private final MarketplaceMetrics metrics;
    private final ExportPool pool;
    private final List<Endpoint> endpoints;
    private final BooleanSupplier closing;
    private final ReentrantReadWriteLock publishing = new ReentrantReadWriteLock();

    /** @param closing true once the marketplace closes: an export running then publishes nothing */
    Exporter(MarketplaceContext ctx, ExportPool pool, BooleanSupplier closing) {
        this.ctx = ctx;
        this.registry = ctx.registry();
        this.format = ctx.format();
        this.metrics = ctx.metrics();
        this.pool = pool;
        this.closing = closing;
        this.endpoints = advertise(ctx.transports(), pool);
    }

    /**
     * One endpoint per kind, from the first transport of that kind that serves pools.
     *
     * @throws IllegalArgumentException when the endpoints cannot fit one offer: no export could ever publish
     */
    private static List<Endpoint> advertise(List<Transport> transports, ExportPool pool) {
        List<Endpoint> out = new ArrayList<>();
        Set<Integer> kinds = new HashSet<>();
        int bytes = 0;
        for (Transport t : transports) {
            Endpoint e = t.advertise(pool).filter(x -> kinds.add(x.kind())).orElse(null);
            if (e != null) {
                out.add(e);
                bytes += e.encodedSize();
            }
        }
        if (bytes > Offer.MAX_ENDPOINT_BYTES) {
            throw new IllegalArgumentException("the transports advertise " + bytes + " bytes of endpoints, more than "
                    + "the " + Offer.MAX_ENDPOINT_BYTES + " an offer holds: " + out);
        }
        if (out.isEmpty()) {
            LOG.warn("no transport advertises the export pool: exports will be skipped");
        }
        return List.copyOf(out);
    }

    /** Exports the chunks {@code keys} name from {@code blockIds} (checked by the caller). */
    ExportResult export(ChunkKey[] keys, int[] blockIds) {
        if (endpoints.isEmpty()) {
            return skipped(0, 0, keys.length, "no transport advertises the export pool");
        }
        List<Integer> fresh = new ArrayList<>();
        boolean[] ownOffered = new boolean[keys.length];
        int already = 0;
        int republished = 0;
        try {
            // Two lookups whatever the prompt's length (two round trips to a remote registry, where asking key by key
            // cost one each): the offered prefix, then each key past it.
            List<Offer> prefix = registry.lookupPrefix(keys, keys.length);
            Offer[] rest = prefix.size() == keys.length ? new Offer[0]
                    : registry.lookupEach(Arrays.asList(keys).subList(prefix.size(), keys.length));
            for (int i = 0; i < keys.length; i++) {
                Offer existing = i < prefix.size() ? prefix.get(i) : rest[i - prefix.size()];
                Offer held = existing == null ? pool.held(keys[i]) : null;
                if (held != null && pool.republish(held,
                        OfferRegistry.expiry(registry.clockMillis(), ctx.offerLeaseMs()))) {
                    // Kept after a publish of unknown outcome, and not in the registry: offered again, not twice.
                    republished++;
                    ownOffered[i] = true;
                } else if (existing == null) {
                    fresh.add(i);
                } else {
                    already++;
                    ownOffered[i] = existing.owner().equals(ctx.self());
                }
            }
        } catch (RegistryException e) {
            return skipped(republished, already, keys.length - already - republished,
                    "registry unavailable: " + e.getMessage());
        }
        // Touched now so the reservation below does not evict them, and again once the new chunks are recorded.
        for (int i = keys.length - 1; i >= 0; i--) {
            if (ownOffered[i]) {
                pool.touch(keys[i]);
            }
        }
        if (fresh.isEmpty()) {
            metrics.chunksExported.add(republished);
            metrics.chunksAlreadyOffered.add(already);
            return new ExportResult(republished, already, 0, "");
        }
        try (ExportPool.Reservation reserved = pool.reserve(fresh.size())) {
            if (reserved.size() == 0) {
                return skipped(republished, already, fresh.size(), POOL_FULL);
            }
            return fill(keys, blockIds, fresh, ownOffered, already, republished, reserved);
        }
    }

    private ExportResult fill(ChunkKey[] keys, int[] blockIds, List<Integer> fresh, boolean[] ownOffered, int already,
                              int republished, ExportPool.Reservation reserved) {
        CopyBatch.Builder batch = CopyBatch.builder();
        for (int s = 0; s < reserved.size(); s++) {
            format.addChunk(batch, ctx.kvCache(), blockIds, fresh.get(s), reserved.offset(s), false);
        }
        try {
            ctx.device().copy(ctx.kvCache().buffer(), pool.buffer(), batch.build()).join();
        } catch (RuntimeException e) {
            return skipped(republished, already, fresh.size(), "copy into the pool failed: " + unwrap(e));
        }
        long expiry = OfferRegistry.expiry(registry.clockMillis(), ctx.offerLeaseMs());
        String skipReason = reserved.size() < fresh.size() ? POOL_FULL : "";
        int published = republished;
        Offer[] offeredAt = new Offer[keys.length];
        int[] reservedAt = new int[keys.length];
        publishing.readLock().lock();
        try {
            if (closing.getAsBoolean()) {
                return skipped(republished, already, fresh.size(), "marketplace closed during the export");
            }
            List<Offer> offers = new ArrayList<>(reserved.size());
            for (int s = 0; s < reserved.size(); s++) {
                offers.add(new Offer(keys[fresh.get(s)], ctx.nodeId(), ctx.self(), endpoints, reserved.offset(s),
                        format.chunkBytes(), ctx.layoutFingerprint(), ExportPool.nextGeneration(), expiry));
            }
            PublishOutcome[] outcomes;
            try {
                outcomes = registry.publishAll(offers);
            } catch (RegistryException e) { // every outcome unknown
                outcomes = new PublishOutcome[offers.size()];
            }
            for (int s = 0; s < reserved.size(); s++) {
                int k = fresh.get(s);
                PublishOutcome outcome = outcomes[s];
                if (outcome == null) {
                    // The write may still land (a remote registry that timed out runs it when it catches up): the
                    // chunk stays in the pool as if published, so it is withdrawn before its memory is reused, and
                    // renewed or offered again once the registry answers.
                    offeredAt[k] = offers.get(s);
                    reservedAt[k] = s;
                    skipReason = "registry unavailable";
                } else if (outcome == PublishOutcome.PUBLISHED) {
                    offeredAt[k] = offers.get(s);
                    reservedAt[k] = s;
                    published++;
                } else if (outcome == PublishOutcome.ALREADY_OFFERED) {
                    already++;
                } else if (outcome == PublishOutcome.REGISTRY_FULL) {
                    skipReason = "registry full";
                }
            }
            // Deepest first over the whole prompt, as in match: the new chunks and the ones this pool already held
            // end up with the root most recent, whichever of them extend the other.
            for (int i = keys.length - 1; i >= 0; i--) {
                if (offeredAt[i] != null) {
                    reserved.published(reservedAt[i], offeredAt[i]);
                } else if (ownOffered[i]) {
                    pool.touch(keys[i]);
                }
            }
        } finally {
            publishing.readLock().unlock();
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

    private ExportResult skipped(int published, int already, int skipped, String reason) {
        metrics.chunksExported.add(published);
        metrics.chunksAlreadyOffered.add(already);
        metrics.chunksExportSkipped.add(skipped);
        LOG.info("export skipped {} chunks: {}", skipped, reason);
        return new ExportResult(published, already, skipped, reason);
    }

    /** Withdraws every offer of the pool; no export publishes while it runs, nor after when closing. */
    void withdrawAll() {
        publishing.writeLock().lock();
        try {
            pool.withdrawAll();
        } finally {
            publishing.writeLock().unlock();
        }
    }

    private static Throwable unwrap(Throwable t) {
        return t instanceof CompletionException && t.getCause() != null ? t.getCause() : t;
    }
}
