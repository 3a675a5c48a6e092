package io.kvmarket.benchmarks;

import io.kvmarket.key.ChunkKey;
import io.kvmarket.key.PrefixHasher;
import io.kvmarket.node.NodeId;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.redis.RedisRegistry;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.PublishOutcome;
import io.kvmarket.testkit.RedisServer;
import io.kvmarket.testkit.ScratchDir;
import io.lettuce.core.RedisClient;
import io.lettuce.core.api.StatefulRedisConnection;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * Longest-prefix lookup of an 8,192-token prompt in the Redis cluster registry, against one PING round trip to the
 * same redis-server over the same kind of connection, in the same run: 32 chunks (256-token chunks) and 512 chunks
 * (16-token chunks). The server runs on this machine's loopback (the benchmark starts it; redis-server must be
 * installed), so the round trip is the loopback's; the target is one round trip plus 100 us. {@code importRound} is
 * everything an import asks of the registry (lookup, pins, the check after the copy, unpins), in round trips.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Fork(value = 1, jvmArgs = {"-Xms512m", "-Xmx512m"})
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
public class RedisLookupBenchmark {

    @Param({"32", "512"})
    public int chunks;

    private Path dir;
    private RedisServer server;
    private RedisRegistry registry;
    private RedisClient pingClient;
    private StatefulRedisConnection<String, String> ping;
    private ChunkKey[] keys;

    @Setup(Level.Trial)
    public void setUp() throws Exception {
        dir = Files.createTempDirectory("kvmarket-bench-redis-");
        server = RedisServer.start(dir);
        registry = RedisRegistry.open(server.uri(), "bench");
        keys = new ChunkKey[chunks];
        long fingerprint = PrefixHasher.layoutFingerprint(Workloads.LAYOUT);
        byte[] handle = new byte[44];
        Endpoint endpoint = new Endpoint(Endpoint.DEVICE_IPC, handle);
        for (int i = 0; i < chunks; i++) {
            keys[i] = new ChunkKey(0x5eed_0000L + i, 0x9e3779b97f4a7c15L * (i + 1));
            Offer o = Offer.of(keys[i], NodeId.local(), ProcessIdentity.current(), endpoint, (long) i * 4096, 4096,
                    fingerprint, i + 1, registry.clockMillis() + TimeUnit.HOURS.toMillis(1));
            if (registry.publish(o) != PublishOutcome.PUBLISHED) {
                throw new IllegalStateException("setup could not publish chunk " + i);
            }
        }
        if (registry.lookupPrefix(keys, chunks).size() != chunks) {
            throw new IllegalStateException("setup: the lookup does not find every chunk");
        }
        pingClient = RedisClient.create(server.uri());
        ping = pingClient.connect();
        ping.setTimeout(Duration.ofSeconds(2));
    }

    @Benchmark
    public List<Offer> lookup() {
        return registry.lookupPrefix(keys, chunks);
    }

    /** What an import asks of the registry: the lookup, the pins, and the check after the copy with the unpins. */
    @Benchmark
    public boolean[] importRound() {
        List<Offer> found = registry.lookupPrefix(keys, chunks);
        registry.pinAll(found, 10_000);
        return registry.releaseCurrent(found);
    }

    @Benchmark
    public String baselinePing() {
        return ping.sync().ping();
    }

    @TearDown(Level.Trial)
    public void tearDown() throws Exception {
        ping.close();
        pingClient.shutdown();
        registry.close();
        server.close();
        ScratchDir.delete(dir);
    }
}
