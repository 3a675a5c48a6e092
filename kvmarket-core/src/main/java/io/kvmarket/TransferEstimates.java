package io.kvmarket;

import io.kvmarket.transfer.Route;
import io.kvmarket.transfer.Transport;

import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;

/**
 * Throughput per transport and source node, learned from the transfers this marketplace ran and seeded by each
 * transport's own route estimate. The learned figure is what fetches took end to end (latency included), as time
 * per byte weighted half to the newest: averaging time, not throughput, lets one slow fetch count (a link that fell
 * from 1 GB/s to 12 MB/s averages to 24 MB/s, not 500 MB/s). It is forgotten {@value #FORGET_AFTER_SECONDS} s after
 * the last fetch, so a source declined while it was slow is tried again on its route's promise instead of being
 * shunned for good.
 */
final class TransferEstimates {

    private static final double ALPHA = 0.5;
    /** Fetches smaller than this say more about latency than throughput, and are not learned from. */
    private static final long MIN_LEARN_BYTES = 64 * 1024;
    static final long FORGET_AFTER_SECONDS = 2;

    private record Source(Transport transport, long nodeId) {
    }

    /** Nanoseconds per byte, end to end, and when it was last observed (System.nanoTime). */
    private record Learned(double nanosPerByte, long atNanos) {
    }

    private final Map<Source, Learned> learned = new ConcurrentHashMap<>();

    /** Estimated time for {@code t} to move {@code bytes} from node {@code nodeId} along {@code route}. */
    long estimateNanos(Transport t, long nodeId, Route route, long bytes) {
        Learned l = learned.get(new Source(t, nodeId));
        if (l == null || System.nanoTime() - l.atNanos > TimeUnit.SECONDS.toNanos(FORGET_AFTER_SECONDS)) {
            return route.estimateNanos(bytes);
        }
        double nanos = bytes * l.nanosPerByte;
        return nanos >= Long.MAX_VALUE ? Long.MAX_VALUE : (long) nanos;
    }

    /** Records one fetch by {@code t} from node {@code nodeId} of {@code bytes} that took {@code nanos}. */
    void record(Transport t, long nodeId, long bytes, long nanos) {
        if (bytes < MIN_LEARN_BYTES || nanos <= 0) {
            return;
        }
        double observed = (double) nanos / bytes;
        long now = System.nanoTime();
        learned.merge(new Source(t, nodeId), new Learned(observed, now),
                (old, fresh) -> new Learned((1 - ALPHA) * old.nanosPerByte + ALPHA * fresh.nanosPerByte, now));
    }
}
