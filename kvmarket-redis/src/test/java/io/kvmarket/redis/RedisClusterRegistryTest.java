package io.kvmarket.redis;

import io.kvmarket.key.ChunkKey;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.testkit.RedisCluster;
import io.kvmarket.testkit.RedisServer;
import io.kvmarket.testkit.RegistryContractTest;
import io.lettuce.core.RedisClient;
import io.lettuce.core.RedisCommandExecutionException;
import io.lettuce.core.api.StatefulRedisConnection;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Function;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The registry contract against a real Redis Cluster of three masters: a prompt's chunk keys lie in many slots, on
 * every node, so lookups, batches and pins are spread over them; each test under its own key prefix.
 */
class RedisClusterRegistryTest extends RegistryContractTest {

    @TempDir
    static Path dir;
    static RedisCluster cluster;
    static final AtomicInteger PREFIXES = new AtomicInteger();

    @BeforeAll
    static void startCluster() {
        assumeTrue(RedisCluster.installed(),
                "redis-server or redis-cli is not installed here; the Redis Cluster registry tests are skipped");
        cluster = RedisCluster.start(dir, 3);
    }

    @AfterAll
    static void stopCluster() {
        if (cluster != null) {
            cluster.close();
        }
    }

    /** The key prefix of this test's registry. */
    String prefix;

    @Override
    protected OfferRegistry create() {
        prefix = "cluster" + PREFIXES.incrementAndGet();
        return new RedisRegistry(cluster.uri(), prefix, Duration.ofSeconds(2), clock::get);
    }

    /**
     * A lookup of keys on every node is one script per node, each key read once, and answers exactly what was
     * published, foreign values skipped; after the nodes forgot their scripts it sends them whole.
     */
    @Test
    void aLookupReadsEachNodeOnceAndAnswersWhatWasPublished() {
        List<ChunkKey> keys = new ArrayList<>();
        Offer[] expected = new Offer[64];
        for (int i = 0; i < expected.length; i++) {
            keys.add(key(i));
            if (i % 5 != 3) {
                expected[i] = offer(i, 1);
                registry.publish(expected[i]);
            }
        }
        setForeign(OfferCodec.hashKey(prefix, keys.get(7)));
        expected[7] = null;
        registry.lookupEach(keys); // the first sends each node the script whole, after its NOSCRIPT answer
        long[] before = readsOnNodes();
        Offer[] found = registry.lookupEach(keys);
        long[] after = readsOnNodes();
        assertEquals(cluster.nodes().size(), after[0] - before[0], "one script per node");
        // Redis counts the scripts' own commands too: one GET per key, the scripts', and none more.
        assertEquals(keys.size(), after[1] - before[1], "each key read once");
        assertArrayEquals(expected, found);
        assertEquals(List.of(expected[0], expected[1], expected[2]), registry.lookupPrefix(keys.toArray(ChunkKey[]::new),
                64), "the prefix stops at the first key not offered");
        for (RedisServer node : cluster.nodes()) {
            onNode(node, conn -> conn.sync().scriptFlush());
        }
        assertArrayEquals(expected, registry.lookupEach(keys), "after the scripts were flushed");
    }

    /**
     * A node serving more of a lookup's keys than one script reads gets several scripts, all sent at once; the
     * answer is the same, key for key.
     */
    @Test
    void aNodeServingManyKeysIsReadInSeveralCallsAnsweringExactly() {
        int n = 3 * RedisScripts.READ_ON_NODE_KEYS + 500;
        List<ChunkKey> keys = new ArrayList<>();
        List<Offer> offers = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            keys.add(key(i));
            if (i % 7 != 5) {
                offers.add(offer(i, 1));
            }
        }
        registry.publishAll(offers);
        Offer[] expected = new Offer[n];
        offers.forEach(o -> expected[keys.indexOf(o.key())] = o);
        registry.lookupEach(keys); // the nodes learn the script
        long[] before = readsOnNodes();
        assertArrayEquals(expected, registry.lookupEach(keys));
        long[] after = readsOnNodes();
        assertEquals(n, after[1] - before[1], "each key read once");
        long calls = after[0] - before[0];
        assertTrue(calls > cluster.nodes().size() && calls <= cluster.nodes().size() + n
                / RedisScripts.READ_ON_NODE_KEYS, "calls of at most " + RedisScripts.READ_ON_NODE_KEYS + " keys: " + calls);
    }

    /** EVALSHA and EVAL calls, and GET calls (scripts' included), summed over the nodes (INFO commandstats). */
    private static long[] readsOnNodes() {
        long[] sums = new long[2];
        Pattern calls = Pattern.compile("cmdstat_(evalsha|eval|get):calls=(\\d+)");
        for (RedisServer node : cluster.nodes()) {
            Matcher m = calls.matcher(onNode(node, conn -> conn.sync().info("commandstats")));
            while (m.find()) {
                sums[m.group(1).equals("get") ? 1 : 0] += Long.parseLong(m.group(2));
            }
        }
        return sums;
    }

    /** A string under {@code key}, written on the node that serves its slot. */
    private static void setForeign(String key) {
        for (RedisServer node : cluster.nodes()) {
            try {
                onNode(node, conn -> conn.sync().set(key, "not an offer"));
                return;
            } catch (RedisCommandExecutionException moved) {
                // another node serves that slot
            }
        }
        throw new IllegalStateException("no node took " + key);
    }

    private static <T> T onNode(RedisServer node, Function<StatefulRedisConnection<String, String>, T> work) {
        try (RedisClient c = RedisClient.create(node.uri()); StatefulRedisConnection<String, String> conn = c.connect()) {
            return work.apply(conn);
        }
    }
}
