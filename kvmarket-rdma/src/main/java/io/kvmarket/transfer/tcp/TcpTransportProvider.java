package io.kvmarket.transfer.tcp;

import io.kvmarket.device.Device;
import io.kvmarket.transfer.Transport;
import io.kvmarket.transfer.TransportProvider;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.UnknownHostException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.Optional;

/**
 * Opens the TCP transport from the process's configuration, each setting a system property or else an environment
 * variable:
 * <ul>
 *   <li>{@value #SECRET_FILE} / {@code KVMARKET_CLUSTER_SECRET_FILE}: a file only its owner may read, holding the
 *       cluster secret (at least 16 bytes); or {@code KVMARKET_CLUSTER_SECRET}, the secret itself (environment only:
 *       a command line is visible to every user of the node). Without one the transport is unavailable: a node
 *       serves KV across nodes only to members of its cluster.</li>
 *   <li>{@value #BIND} / {@code KVMARKET_TCP_BIND}: {@code host:port} to listen on ({@code 0.0.0.0:0} by default: every
 *       interface, a port the kernel picks), or {@code off} to fetch only.</li>
 *   <li>{@value #ADVERTISE} / {@code KVMARKET_TCP_ADVERTISE}: the address peers reach this node at, when it is not
 *       the bind address nor the first non-loopback one.</li>
 *   <li>{@value #SEED_GBPS} / {@code KVMARKET_TCP_SEED_GBPS}: the throughput imports plan with before they measure
 *       one (GB/s, 1.0 by default).</li>
 *   <li>{@value #CHUNK_MACS} / {@code KVMARKET_TCP_CHUNK_MACS}: {@code false} to import without a MAC per chunk, where
 *       the network itself guarantees integrity ({@code true} by default).</li>
 * </ul>
 */
public final class TcpTransportProvider implements TransportProvider {

    public static final String SECRET_FILE = "kvmarket.cluster.secretFile";
    public static final String BIND = "kvmarket.tcp.bind";
    public static final String ADVERTISE = "kvmarket.tcp.advertise";
    public static final String SEED_GBPS = "kvmarket.tcp.seedGBps";
    public static final String CHUNK_MACS = "kvmarket.tcp.chunkMacs";

    @Override
    public String name() {
        return "tcp";
    }

    @Override
    public Optional<Throwable> unavailabilityCause() {
        try {
            configFromEnvironment();
            return Optional.empty();
        } catch (RuntimeException e) {
            return Optional.of(e);
        }
    }

    @Override
    public Transport open(Device device, long nodeId, long idleMillis) {
        return TcpTransport.open(device, nodeId, configFromEnvironment());
    }

    /**
     * @throws IllegalStateException    when no cluster secret is configured
     * @throws IllegalArgumentException when a setting is malformed, naming it
     */
    public static TcpConfig configFromEnvironment() {
        ClusterSecret secret;
        String file = setting(SECRET_FILE, "KVMARKET_CLUSTER_SECRET_FILE");
        String inline = System.getenv("KVMARKET_CLUSTER_SECRET");
        if (file != null) {
            secret = ClusterSecret.fromFile(Path.of(file));
        } else if (inline != null && !inline.isEmpty()) {
            secret = ClusterSecret.of(inline.getBytes(StandardCharsets.UTF_8));
        } else {
            throw new IllegalStateException("no cluster secret configured (-D" + SECRET_FILE
                    + ", KVMARKET_CLUSTER_SECRET_FILE or KVMARKET_CLUSTER_SECRET): serving and fetching KV across "
                    + "nodes over TCP are off");
        }
        TcpConfig config = TcpConfig.of(secret);
        String bind = setting(BIND, "KVMARKET_TCP_BIND");
        if (bind != null) {
            config = config.withBind(bind.equalsIgnoreCase("off") ? null : hostPort(BIND, bind));
        }
        String advertise = setting(ADVERTISE, "KVMARKET_TCP_ADVERTISE");
        if (advertise != null) {
            config = config.withAdvertise(address(ADVERTISE, advertise));
        }
        String seed = setting(SEED_GBPS, "KVMARKET_TCP_SEED_GBPS");
        if (seed != null) {
            try {
                config = config.withSeed(Double.parseDouble(seed), config.seedLatencyMicros());
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException(SEED_GBPS + " is not a number: " + seed, e);
            }
        }
        String macs = setting(CHUNK_MACS, "KVMARKET_TCP_CHUNK_MACS");
        if (macs != null) {
            if (!macs.equalsIgnoreCase("true") && !macs.equalsIgnoreCase("false")) {
                throw new IllegalArgumentException(CHUNK_MACS + " must be true or false, was " + macs);
            }
            config = config.withChunkMacs(Boolean.parseBoolean(macs));
        }
        return config;
    }

    /** The system property, else the environment variable, trimmed; null when neither is set (or both are blank). */
    public static String setting(String property, String env) {
        String v = System.getProperty(property);
        if (v == null || v.isBlank()) {
            v = System.getenv(env);
        }
        return v == null || v.isBlank() ? null : v.trim();
    }

    /** {@code host:port}, {@code [v6]:port} or {@code :port}. */
    public static InetSocketAddress hostPort(String name, String value) {
        int colon = value.lastIndexOf(':');
        if (colon < 0) {
            throw new IllegalArgumentException(name + " must be host:port, was " + value);
        }
        String host = value.substring(0, colon);
        if (host.startsWith("[") && host.endsWith("]")) {
            host = host.substring(1, host.length() - 1);
        }
        int port;
        try {
            port = Integer.parseInt(value.substring(colon + 1));
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(name + " has no port number: " + value, e);
        }
        if (port < 0 || port > 65535) {
            throw new IllegalArgumentException(name + " port " + port + " outside [0, 65535]");
        }
        return host.isEmpty() ? new InetSocketAddress(port) : new InetSocketAddress(address(name, host), port);
    }

    private static InetAddress address(String name, String host) {
        try {
            return InetAddress.getByName(host);
        } catch (UnknownHostException e) {
            throw new IllegalArgumentException(name + ": unknown host " + host, e);
        }
    }
}
