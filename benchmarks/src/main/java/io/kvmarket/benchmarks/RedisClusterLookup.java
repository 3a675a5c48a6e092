package io.kvmarket.benchmarks;

import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.NodeId;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.redis.RedisRegistry;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.PublishOutcome;
import io.kvmarket.testkit.RedisCluster;
import io.kvmarket.testkit.RedisServer;
import io.kvmarket.testkit.ScratchDir;
import io.lettuce.core.RedisClient;
import io.lettuce.core.api.StatefulRedisConnection;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.TimeUnit;

/**
 * Longest-prefix lookup of an 8,192-token prompt (32 chunks of 256 tokens, 512 of 16) on a Redis Cluster of three
 * masters, where a lookup is one pipelined read per key spread over the masters, and on one redis-server, where it
 * is one script; each against a PING round trip to one of its servers, in the same run. All servers run on this
 * machine's loopback. The target, as for {@code redis_lookup}: one round trip plus 100 us.
 *
 * <p>Usage: {@code RedisClusterLookup}; needs redis-server and redis-cli.
 */
public final class RedisClusterLookup {

    private static final int ROUNDS = 5;

    private RedisClusterLookup() {
    }

    public static void main(String[] args) throws Exception {
        if (!RedisCluster.installed()) {
            System.out.println("redis_cluster_lookup: SKIPPED (redis-server or redis-cli is not installed)");
            return;
        }
        Path dir = Files.createTempDirectory("kvmarket-cluster-lookup-");
        try (RedisCluster cluster = RedisCluster.start(dir, 3); RedisServer single = RedisServer.start(dir)) {
            for (int chunks : new int[] {32, 512}) {
                measure("cluster3", cluster.uri(), "redis://127.0.0.1:" + cluster.nodes().get(0).port(), chunks);
                measure("single", single.uri(), single.uri(), chunks);
            }
        } finally {
            ScratchDir.delete(dir);
        }
    }

    private static void measure(String topology, String uri, String pingUri, int chunks) {
        ChunkKey[] keys = new ChunkKey[chunks];
        try (RedisRegistry registry = RedisRegistry.open(uri, "bench" + chunks)) {
            Endpoint endpoint = new Endpoint(Endpoint.DEVICE_IPC, new byte[44]);
            List<Offer> offers = new ArrayList<>();
            for (int i = 0; i < chunks; i++) {
                keys[i] = new ChunkKey(0x5eed_0000L + i, 0x9e3779b97f4a7c15L * (i + 1));
                offers.add(Offer.of(keys[i], NodeId.local(), ProcessIdentity.current(), endpoint, (long) i * 4096, 4096,
                        1, i + 1, registry.clockMillis() + TimeUnit.HOURS.toMillis(1)));
            }
            for (PublishOutcome o : registry.publishAll(offers)) {
                if (o != PublishOutcome.PUBLISHED && o != PublishOutcome.ALREADY_OFFERED) {
                    throw new IllegalStateException("setup could not publish: " + o);
                }
            }
            RedisClient pingClient = RedisClient.create(pingUri);
            try (StatefulRedisConnection<String, String> ping = pingClient.connect()) {
                int n = chunks <= 32 ? 2_000 : 300;
                double[] lookupUs = new double[ROUNDS];
                double[] pingUs = new double[ROUNDS];
                for (int round = -1; round < ROUNDS; round++) { // round -1 warms up
                    long t0 = System.nanoTime();
                    for (int i = 0; i < n; i++) {
                        if (registry.lookupPrefix(keys, chunks).size() != chunks) {
                            throw new IllegalStateException("a lookup missed the published prompt");
                        }
                    }
                    long t1 = System.nanoTime();
                    for (int i = 0; i < n; i++) {
                        ping.sync().ping();
                    }
                    long t2 = System.nanoTime();
                    if (round >= 0) {
                        lookupUs[round] = (t1 - t0) / 1e3 / n;
                        pingUs[round] = (t2 - t1) / 1e3 / n;
                    }
                }
                double lookup = median(lookupUs);
                double rtt = median(pingUs);
                System.out.printf(Locale.ROOT, "redis_cluster_lookup: topology=%s chunks=%d us_per_lookup=%.1f"
                                + " baseline_ping_us=%.1f excess_over_rtt_us=%.1f target=<=1RTT+100us met=%b%n",
                        topology, chunks, lookup, rtt, lookup - rtt, lookup - rtt <= 100);
            } finally {
                pingClient.shutdown();
            }
        }
    }

    private static double median(double[] xs) {
        double[] s = xs.clone();
        java.util.Arrays.sort(s);
        return s[s.length / 2];
    }
}
