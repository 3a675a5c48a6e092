package io.kvmarket;

import io.kvmarket.transfer.Route;
import io.kvmarket.transfer.Transport;

import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Throughput per transport, learned from the transfers this marketplace ran and seeded by each transport's own
 * route estimate: an exponentially weighted average over recent fetches, so a link that slows down is noticed
 * within a few imports.
 */
final class TransferEstimates {

    /** Weight of the newest fetch. */
    private static final double ALPHA = 0.3;
    /** Fetches smaller than this say more about latency than throughput, and are not learned from. */
    private static final long MIN_LEARN_BYTES = 64 * 1024;

    private final Map<Transport, Double> bytesPerNano = new ConcurrentHashMap<>();

    /** Estimated time for {@code t} to move {@code bytes} along {@code route}. */
    long estimateNanos(Transport t, Route route, long bytes) {
        Double learned = bytesPerNano.get(t);
        return learned == null ? route.estimateNanos(bytes)
                : new Route(route.locality(), route.latencyNanos(), learned).estimateNanos(bytes);
    }

    /** Records one fetch by {@code t} of {@code bytes} that took {@code nanos}. */
    void record(Transport t, long bytes, long nanos) {
        if (bytes < MIN_LEARN_BYTES || nanos <= 0) {
            return;
        }
        double observed = (double) bytes / nanos;
        bytesPerNano.merge(t, observed, (old, now) -> (1 - ALPHA) * old + ALPHA * now);
    }
}
