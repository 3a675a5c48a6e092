package io.kvmarket.redis;

import io.kvmarket.testkit.RedisServer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.LongSupplier;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * A real redis-server of its own for each test, in the test's directory, a key prefix no other test uses, and what
 * the test opened closed after it (last first), the server resumed first in case the test stopped it.
 */
abstract class RedisServerTest {

    private static final AtomicInteger PREFIXES = new AtomicInteger();

    @TempDir
    Path dir;
    RedisServer server;
    String prefix;
    final List<AutoCloseable> toClose = new ArrayList<>();

    @BeforeEach
    void startRedis() {
        assumeTrue(RedisServer.installed(), "redis-server is not installed here; " + getClass().getSimpleName()
                + " is skipped");
        server = RedisServer.start(dir);
        prefix = getClass().getSimpleName() + PREFIXES.incrementAndGet();
    }

    @AfterEach
    void stopRedis() {
        if (server == null) {
            return;
        }
        try {
            server.resume();
        } catch (RuntimeException notStopped) {
            // it was running
        }
        for (int i = toClose.size() - 1; i >= 0; i--) {
            try {
                toClose.get(i).close();
            } catch (Exception ignored) {
                // closing what is left; the test's verdict stands
            }
        }
        server.close();
    }

    /** A registry on this test's server and prefix, closed after the test. */
    RedisRegistry registry(Duration timeout, LongSupplier clock) {
        RedisRegistry r = new RedisRegistry(server.uri(), prefix, timeout, clock);
        toClose.add(r);
        return r;
    }

    RedisRegistry registry(Duration timeout) {
        return registry(timeout, System::currentTimeMillis);
    }
}
