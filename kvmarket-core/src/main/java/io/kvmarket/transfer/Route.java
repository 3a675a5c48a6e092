package io.kvmarket.transfer;

/**
 * How a transport would move an offer's chunks here: its locality, which ranks first, then its estimated time,
 * which ranks transports of the same locality.
 *
 * @param locality     how close the source is
 * @param latencyNanos fixed cost of one fetch (mapping, round trips)
 * @param bytesPerNano expected throughput (1.0 is 1 GB/s)
 */
public record Route(Locality locality, long latencyNanos, double bytesPerNano) {

    public Route {
        if (locality == null || latencyNanos < 0 || !(bytesPerNano > 0)) {
            throw new IllegalArgumentException("bad route: " + locality + ", " + latencyNanos + " ns, "
                    + bytesPerNano + " B/ns");
        }
    }

    /** Saturates at {@link Long#MAX_VALUE}, so an absurdly slow route ranks last rather than wrapping to first. */
    public long estimateNanos(long bytes) {
        double nanos = latencyNanos + bytes / bytesPerNano;
        return nanos >= Long.MAX_VALUE ? Long.MAX_VALUE : (long) nanos;
    }
}
