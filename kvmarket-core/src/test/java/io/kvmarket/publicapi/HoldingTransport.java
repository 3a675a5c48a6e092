package io.kvmarket.publicapi;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.registry.Offer;
import io.kvmarket.transfer.Transport;

import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/** A user-written transport wrapper: holds every fetch until released, counts closes. */
final class HoldingTransport implements Transport {
    final Transport delegate;
    final CountDownLatch fetching = new CountDownLatch(1);
    volatile CountDownLatch proceed = new CountDownLatch(0);
    final AtomicInteger closes = new AtomicInteger();

    HoldingTransport(Transport delegate) {
        this.delegate = delegate;
    }

    @Override
    public String name() {
        return "holding-" + delegate.name();
    }

    @Override
    public boolean reaches(Offer offer) {
        return delegate.reaches(offer);
    }

    @Override
    public CompletableFuture<Void> fetch(Offer source, DeviceBuffer dst, CopyBatch batch) {
        fetching.countDown();
        try {
            proceed.await(20, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        return delegate.fetch(source, dst, batch);
    }

    @Override
    public void evictStale() {
        delegate.evictStale();
    }

    @Override
    public void close() {
        closes.incrementAndGet();
        delegate.close();
    }
}
