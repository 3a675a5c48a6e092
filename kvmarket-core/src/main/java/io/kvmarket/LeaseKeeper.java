package io.kvmarket;

import io.kvmarket.node.MappedFaults;
import io.kvmarket.pool.ExportPool;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.transfer.Transport;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.List;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;

/**
 * Keeps this marketplace's offers alive: every third of the offer lease it renews them, offers again the ones the
 * registry lost while the pool still holds them (a Redis restarted empty), and lets the transports drop mappings
 * of dead or idle peers.
 */
final class LeaseKeeper {

    private static final Logger LOG = LoggerFactory.getLogger(LeaseKeeper.class);

    private final OfferRegistry registry;
    private final ExportPool pool;
    private final List<Transport> transports;
    private final long offerLeaseMs;
    private final ScheduledExecutorService scheduler;

    LeaseKeeper(MarketplaceContext ctx, ExportPool pool) {
        this.registry = ctx.registry();
        this.pool = pool;
        this.transports = ctx.transports();
        this.offerLeaseMs = ctx.offerLeaseMs();
        this.scheduler = Executors.newSingleThreadScheduledExecutor(r -> {
            Thread t = new Thread(r, "kvmarket-lease-keeper");
            t.setDaemon(true);
            return t;
        });
        long period = Math.max(10, offerLeaseMs / 3);
        scheduler.scheduleWithFixedDelay(this::renew, period, period, TimeUnit.MILLISECONDS);
    }

    /**
     * One round: renews every offer of the pool and evicts stale transport mappings. Nothing escapes it: an
     * exception out of a scheduled task would cancel every later round, and the offers would silently expire.
     */
    void renew() {
        try {
            long expiry = OfferRegistry.expiry(registry.clockMillis(), offerLeaseMs);
            for (Offer o : pool.publishedOffers()) {
                try {
                    // Gone from the registry while the pool holds it (the registry lost it): offer it again.
                    if (!registry.renew(o, expiry) && !pool.republish(o, expiry)) {
                        LOG.debug("{} is no longer offered", o);
                    }
                } catch (RuntimeException e) {
                    LOG.warn("cannot renew {}: {}", o, e.toString());
                }
            }
            for (Transport t : transports) {
                try {
                    t.evictStale();
                } catch (RuntimeException e) {
                    LOG.warn("transport {} failed to evict stale peers: {}", t.name(), e.toString());
                }
            }
        } catch (RuntimeException | InternalError e) {
            MappedFaults.rethrowUnlessFault(e); // a fault over mapped memory may be reported in this round's code
            LOG.warn("lease renewal round failed; the next one retries: {}", e.toString());
        }
    }

    /** Schedules no further round. */
    void stop() {
        scheduler.shutdown();
    }

    /** Waits for a round in flight to finish: interrupting it would only abort its registry write. */
    void awaitStopped() {
        boolean interrupted = Thread.interrupted();
        try {
            while (true) {
                try {
                    if (!scheduler.awaitTermination(10, TimeUnit.SECONDS)) {
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
}
