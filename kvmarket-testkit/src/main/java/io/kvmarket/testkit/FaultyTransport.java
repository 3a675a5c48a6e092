package io.kvmarket.testkit;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;
import io.kvmarket.transfer.Route;
import io.kvmarket.transfer.ServedPool;
import io.kvmarket.transfer.Transport;

import java.util.List;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;
import java.util.function.UnaryOperator;

/**
 * Wraps a transport and runs a fault around each fetch (withdraw, overwrite, fail, hold), in the style of Aeron's
 * loss generators: tests inject faults through a wrapper, not through flags in the code under test.
 */
public final class FaultyTransport implements Transport {

    private final Transport delegate;
    /**
     * Runs in the loading thread before the fetch starts, with the fetch's first chunk; may throw a
     * TransferException to fail it.
     */
    public volatile Consumer<Offer> beforeFetch = o -> { };
    /** Runs before every route the importer asks for; may throw, as a broken transport would. */
    public volatile Consumer<Offer> beforeRoute = o -> { };
    /** What the importer is told about a route: the delegate's, or one a test makes up (a slow link). */
    public volatile UnaryOperator<Route> routeAs = r -> r;
    /** Runs once the fetch's copy has completed, with its first chunk. */
    public volatile Consumer<Offer> afterFetch = o -> { };

    public FaultyTransport(Transport delegate) {
        this.delegate = delegate;
    }

    /**
     * Makes every fetch wait for {@code proceed} (at most 20 s) after counting down {@code fetching}.
     */
    public void holdFetches(CountDownLatch fetching, CountDownLatch proceed) {
        beforeFetch = o -> {
            fetching.countDown();
            try {
                proceed.await(20, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        };
    }

    @Override
    public String name() {
        return "faulty-" + delegate.name();
    }

    @Override
    public int endpointKind() {
        return delegate.endpointKind();
    }

    @Override
    public Optional<Endpoint> advertise(ServedPool pool) {
        return delegate.advertise(pool);
    }

    @Override
    public Optional<Route> route(Offer offer) {
        beforeRoute.accept(offer);
        return delegate.route(offer).map(routeAs);
    }

    @Override
    public CompletableFuture<Void> fetch(List<Offer> chunks, DeviceBuffer dst, CopyBatch batch) {
        beforeFetch.accept(chunks.get(0));
        return delegate.fetch(chunks, dst, batch).thenRun(() -> afterFetch.accept(chunks.get(0)));
    }

    @Override
    public void evictStale() {
        delegate.evictStale();
    }

    @Override
    public void close() {
        delegate.close();
    }
}
