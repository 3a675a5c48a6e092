package io.kvmarket.redis;

import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.testkit.RedisCluster;
import io.kvmarket.testkit.RegistryContractTest;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.atomic.AtomicInteger;

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

    @Override
    protected OfferRegistry create() {
        return new RedisRegistry(cluster.uri(), "cluster" + PREFIXES.incrementAndGet(), Duration.ofSeconds(2),
                clock::get);
    }
}
