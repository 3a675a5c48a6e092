package io.kvmarket.redis;

import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.testkit.RedisServer;
import io.kvmarket.testkit.RegistryContractTest;
import io.lettuce.core.RedisClient;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.atomic.AtomicInteger;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

/** The registry contract against a real redis-server; each test under its own key prefix. */
class RedisRegistryTest extends RegistryContractTest {

    @TempDir
    static Path dir;
    static RedisServer server;
    static final AtomicInteger PREFIXES = new AtomicInteger();

    @BeforeAll
    static void startRedis() {
        assumeTrue(RedisServer.installed(), "redis-server is not installed here; the Redis registry tests are skipped");
        server = RedisServer.start(dir);
    }

    @AfterAll
    static void stopRedis() {
        if (server != null) {
            server.close();
        }
    }

    @Override
    protected OfferRegistry create() {
        return new RedisRegistry(server.uri(), "contract" + PREFIXES.incrementAndGet(),
                Duration.ofSeconds(2), clock::get);
    }
}
