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

    public long estimateNanos(long bytes) {
        return latencyNanos + (long) (bytes / bytesPerNano);
    }
}
