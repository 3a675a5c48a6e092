package io.kvmarket.transfer.tcp;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.util.Objects;

/**
 * How a node's TCP transport serves and fetches. Only the cluster secret is required; the defaults serve on every
 * interface at a port the kernel picks, and advertise the node's first non-loopback address.
 *
 * @param secret               shared by every member of the cluster
 * @param bind                 where the server listens; null to serve nothing (fetch only)
 * @param advertise            the address peers reach the server at; null for the bind address, or when that is
 *                             the wildcard, the first address of an interface that is up and not loopback
 * @param maxConnections       connections served at once (one thread each); more are refused
 * @param fetchThreads         fetches running at once on the importing side
 * @param connectTimeoutMillis bound on connecting and on the handshake
 * @param ioTimeoutMillis      a transfer that moves no byte for this long fails
 * @param idleTimeoutMillis    the server closes a connection idle this long; a client drops a pooled one before
 * @param seedGigabytesPerSecond throughput an import plans with before it has measured any (1.0 is 1 GB/s)
 * @param seedLatencyMicros    fixed cost of one fetch an import plans with (round trips, connection)
 * @param chunkMacs            whether every chunk this node imports carries a MAC under the connection's session
 *                             key (HMAC-SHA256 over every byte, each side; see {@code tcp_import} for its cost):
 *                             bytes rewritten on the way then never count as delivered. Off only where the network itself guarantees integrity
 *                             (IPsec, WireGuard, a trusted fabric)
 * @param stagingSlots         slots of the staging ring, for a device whose memory the JVM cannot address (a GPU):
 *                             transfers of all connections share them
 * @param stagingSlotBytes     bytes of each slot: the ring pins {@code stagingSlots x stagingSlotBytes} of host memory
 */
public record TcpConfig(ClusterSecret secret, InetSocketAddress bind, InetAddress advertise, int maxConnections,
                        int fetchThreads, long connectTimeoutMillis, long ioTimeoutMillis, long idleTimeoutMillis,
                        double seedGigabytesPerSecond, long seedLatencyMicros, boolean chunkMacs, int stagingSlots,
                        int stagingSlotBytes) {

    public TcpConfig {
        Objects.requireNonNull(secret, "a cluster secret is required: without one, TCP serving is off");
        if (advertise != null && (advertise.isAnyLocalAddress() || advertise.isMulticastAddress())) {
            throw new IllegalArgumentException("advertise names no one host: " + advertise.getHostAddress()
                    + "; give the address other nodes reach this one at");
        }
        if (maxConnections < 1 || fetchThreads < 1) {
            throw new IllegalArgumentException("maxConnections and fetchThreads must be positive: " + maxConnections
                    + ", " + fetchThreads);
        }
        if (connectTimeoutMillis < 1 || ioTimeoutMillis < 1 || idleTimeoutMillis < 1) {
            throw new IllegalArgumentException("timeouts must be at least 1 ms: connect " + connectTimeoutMillis
                    + ", io " + ioTimeoutMillis + ", idle " + idleTimeoutMillis);
        }
        if (stagingSlots < 1 || stagingSlotBytes < 4096) {
            throw new IllegalArgumentException("a staging ring needs a slot and slots of at least 4 KiB: "
                    + stagingSlots + " x " + stagingSlotBytes);
        }
        if (!(seedGigabytesPerSecond > 0) || Double.isInfinite(seedGigabytesPerSecond) || seedLatencyMicros < 0) {
            throw new IllegalArgumentException("seed throughput must be positive and finite, latency non-negative: "
                    + seedGigabytesPerSecond + " GB/s, " + seedLatencyMicros + " us");
        }
    }

    /** Serves on every interface at a kernel-picked port, with the default limits. */
    public static TcpConfig of(ClusterSecret secret) {
        return new TcpConfig(secret, new InetSocketAddress(0), null, 64, 16, 1000, 2000, 60_000, 1.0, 200, true, 8, 4 << 20);
    }

    public TcpConfig withBind(InetSocketAddress bind) {
        return new TcpConfig(secret, bind, advertise, maxConnections, fetchThreads, connectTimeoutMillis,
                ioTimeoutMillis, idleTimeoutMillis, seedGigabytesPerSecond, seedLatencyMicros, chunkMacs, stagingSlots, stagingSlotBytes);
    }

    public TcpConfig withAdvertise(InetAddress advertise) {
        return new TcpConfig(secret, bind, advertise, maxConnections, fetchThreads, connectTimeoutMillis,
                ioTimeoutMillis, idleTimeoutMillis, seedGigabytesPerSecond, seedLatencyMicros, chunkMacs, stagingSlots, stagingSlotBytes);
    }

    public TcpConfig withLimits(int maxConnections, int fetchThreads) {
        return new TcpConfig(secret, bind, advertise, maxConnections, fetchThreads, connectTimeoutMillis,
                ioTimeoutMillis, idleTimeoutMillis, seedGigabytesPerSecond, seedLatencyMicros, chunkMacs, stagingSlots, stagingSlotBytes);
    }

    public TcpConfig withTimeouts(long connectTimeoutMillis, long ioTimeoutMillis, long idleTimeoutMillis) {
        return new TcpConfig(secret, bind, advertise, maxConnections, fetchThreads, connectTimeoutMillis,
                ioTimeoutMillis, idleTimeoutMillis, seedGigabytesPerSecond, seedLatencyMicros, chunkMacs, stagingSlots, stagingSlotBytes);
    }

    public TcpConfig withSeed(double gigabytesPerSecond, long latencyMicros) {
        return new TcpConfig(secret, bind, advertise, maxConnections, fetchThreads, connectTimeoutMillis,
                ioTimeoutMillis, idleTimeoutMillis, gigabytesPerSecond, latencyMicros, chunkMacs, stagingSlots, stagingSlotBytes);
    }

    public TcpConfig withChunkMacs(boolean chunkMacs) {
        return new TcpConfig(secret, bind, advertise, maxConnections, fetchThreads, connectTimeoutMillis,
                ioTimeoutMillis, idleTimeoutMillis, seedGigabytesPerSecond, seedLatencyMicros, chunkMacs, stagingSlots, stagingSlotBytes);
    }

    public TcpConfig withStaging(int stagingSlots, int stagingSlotBytes) {
        return new TcpConfig(secret, bind, advertise, maxConnections, fetchThreads, connectTimeoutMillis,
                ioTimeoutMillis, idleTimeoutMillis, seedGigabytesPerSecond, seedLatencyMicros, chunkMacs, stagingSlots,
                stagingSlotBytes);
    }
}
