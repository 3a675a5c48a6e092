package io.kvmarket;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.registry.Offer;
import io.kvmarket.transfer.Transport;

import java.util.concurrent.CompletableFuture;
import java.util.function.Consumer;

/** Wraps a transport and runs a fault (withdraw, overwrite, fail) around each fetch, in the style of Aeron's loss generators. */
final class FaultyTransport implements Transport {

    private final Transport delegate;
    volatile Consumer<Offer> beforeFetch = o -> { };
    volatile Consumer<Offer> afterFetch = o -> { };

    FaultyTransport(Transport delegate) {
        this.delegate = delegate;
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
