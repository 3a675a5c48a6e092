package io.kvmarket.testkit;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.registry.Offer;
import io.kvmarket.transfer.Transport;

import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;

/**
 * Wraps a transport and runs a fault around each fetch (withdraw, overwrite, fail, hold), in the style of Aeron's
 * loss generators: tests inject faults through a wrapper, not through flags in the code under test.
 */
public final class FaultyTransport implements Transport {

    private final Transport delegate;
    /** Runs in the loading thread before the fetch starts; may throw a TransferException to fail it. */
    public volatile Consumer<Offer> beforeFetch = o -> { };
    /** Runs once the fetch's copy has completed. */
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
    public boolean reaches(Offer offer) {
        return delegate.reaches(offer);
    }

    @Override
    public CompletableFuture<Void> fetch(Offer source, DeviceBuffer dst, CopyBatch batch) {
        beforeFetch.accept(source);
        return delegate.fetch(source, dst, batch).thenRun(() -> afterFetch.accept(source));
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
