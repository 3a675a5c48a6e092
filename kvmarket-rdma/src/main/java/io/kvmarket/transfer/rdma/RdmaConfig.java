package io.kvmarket.transfer.rdma;

import io.kvmarket.transfer.tcp.TcpConfig;

import java.util.Objects;

/**
 * How a node's RDMA transport sets up and moves. The control channel (queue pair setup between members) runs over
 * the TCP transport's protocol and takes its secret, bind, advertised address and timeouts from {@code control};
 * the rest shapes the verbs side.
 *
 * @param control           cluster secret, control server bind (null: import only) and advertise address, timeouts
 * @param device            RDMA device name, or null for the first with an ACTIVE port
 * @param port              device port, 0 for its first ACTIVE one
 * @param gidIndex          GID index, -1 for the port's first non-zero GID
 * @param queuePairs        queue pairs per channel: one import spreads its reads over all of them
 * @param sendQueueDepth    work requests one queue pair holds: an import posts at most queuePairs x this at once
 * @param readDepth         RDMA READs outstanding per queue pair (clamped to the device's limit)
 * @param channelsPerPeer   channels to one peer at once (one per concurrent import from it); the server refuses more
 * @param fetchThreads      imports running at once
 * @param fetchDeadlineMillis an import that has not completed in this time fails, its queue pairs torn down
 * @param ackTimeout        verbs local ACK timeout exponent (4.096 us x 2^ackTimeout per try)
 * @param retryCount        verbs transport retries before a silent peer is a retry-exceeded error
 * @param seedGigabytesPerSecond throughput an import plans with (1.0 is 1 GB/s)
 * @param seedLatencyMicros fixed cost of one import it plans with
 */
public record RdmaConfig(TcpConfig control, String device, int port, int gidIndex, int queuePairs,
                         int sendQueueDepth, int readDepth, int channelsPerPeer, int fetchThreads,
                         long fetchDeadlineMillis, int ackTimeout, int retryCount, double seedGigabytesPerSecond,
                         long seedLatencyMicros) {

    /** Most queue pairs one channel may have. */
    public static final int MAX_QUEUE_PAIRS = 64;

    public RdmaConfig {
        Objects.requireNonNull(control, "control (the TCP settings of the control channel)");
        if (queuePairs < 1 || queuePairs > MAX_QUEUE_PAIRS) {
            throw new IllegalArgumentException("queuePairs " + queuePairs + " outside [1, " + MAX_QUEUE_PAIRS + "]");
        }
        if (sendQueueDepth < 1 || readDepth < 1 || channelsPerPeer < 1 || fetchThreads < 1) {
            throw new IllegalArgumentException("sendQueueDepth, readDepth, channelsPerPeer and fetchThreads must be "
                    + "positive: " + sendQueueDepth + ", " + readDepth + ", " + channelsPerPeer + ", " + fetchThreads);
        }
        if (fetchDeadlineMillis < 1 || ackTimeout < 1 || ackTimeout > 31 || retryCount < 0 || retryCount > 7) {
            throw new IllegalArgumentException("fetchDeadlineMillis must be >= 1, ackTimeout in [1, 31], retryCount in"
                    + " [0, 7]: " + fetchDeadlineMillis + ", " + ackTimeout + ", " + retryCount);
        }
        if (port < 0 || port > 255 || gidIndex < -1 || gidIndex > 255) {
            throw new IllegalArgumentException("port " + port + " outside [0, 255] or gidIndex " + gidIndex
                    + " outside [-1, 255]");
        }
        if (!(seedGigabytesPerSecond > 0) || Double.isInfinite(seedGigabytesPerSecond) || seedLatencyMicros < 0) {
            throw new IllegalArgumentException("seed throughput must be positive and finite, latency non-negative: "
                    + seedGigabytesPerSecond + " GB/s, " + seedLatencyMicros + " us");
        }
    }

    /**
     * The first ACTIVE port of the first device, 4 queue pairs of 4,096 work requests per channel (an 8,192-segment
     * import is one post), 16 reads in flight per queue pair, a 10 s deadline per import, and a plan of 10 GB/s.
     */
    public static RdmaConfig of(TcpConfig control) {
        return new RdmaConfig(control, null, 0, -1, 4, 4096, 16, 8, 16, 10_000, 14, 7, 10.0, 20);
    }

    public RdmaConfig withDevice(String device, int port, int gidIndex) {
        return new RdmaConfig(control, device, port, gidIndex, queuePairs, sendQueueDepth, readDepth, channelsPerPeer,
                fetchThreads, fetchDeadlineMillis, ackTimeout, retryCount, seedGigabytesPerSecond, seedLatencyMicros);
    }

    public RdmaConfig withQueues(int queuePairs, int sendQueueDepth, int readDepth) {
        return new RdmaConfig(control, device, port, gidIndex, queuePairs, sendQueueDepth, readDepth, channelsPerPeer,
                fetchThreads, fetchDeadlineMillis, ackTimeout, retryCount, seedGigabytesPerSecond, seedLatencyMicros);
    }

    public RdmaConfig withTimeouts(long fetchDeadlineMillis, int ackTimeout, int retryCount) {
        return new RdmaConfig(control, device, port, gidIndex, queuePairs, sendQueueDepth, readDepth, channelsPerPeer,
                fetchThreads, fetchDeadlineMillis, ackTimeout, retryCount, seedGigabytesPerSecond, seedLatencyMicros);
    }
}
