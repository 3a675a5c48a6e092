package io.kvmarket.redis;

import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.PublishOutcome;
import io.kvmarket.testkit.RedisCluster;
import io.kvmarket.testkit.RedisServer;
import io.kvmarket.testkit.RegistryContractTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Objects;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/** A Redis Cluster with a master stalled or restarted empty: batches stay bounded, the registry recovers by itself. */
@Timeout(180)
class RedisClusterRecoveryTest {

    @TempDir
    Path dir;

    static List<Offer> offers(ChunkKey[] keys, long genBase, long expiry) {
        List<Offer> out = new ArrayList<>();
        for (int i = 0; i < keys.length; i++) {
            out.add(RegistryContractTest.offer(keys[i], ProcessIdentity.current(), genBase + i, expiry));
        }
        return out;
    }

    /** One master SIGSTOPped: a batch over keys of every master answers, the paused master's outcomes unknown. */
    @Test
    @Timeout(60) // one call at a time would wait a command timeout per offer of the paused master, and more
    void publishAllWithAPausedMasterIsBounded() throws Exception {
        assumeTrue(RedisCluster.installed(),
                "redis-server or redis-cli is not installed here; the Redis Cluster recovery tests are skipped");
        try (RedisCluster cluster = RedisCluster.start(dir, 3);
             RedisRegistry r = RedisRegistry.open(cluster.uri(), "cpause")) {
            ChunkKey[] keys = RegistryContractTest.keys(60);
            r.publish(RegistryContractTest.offer(RegistryContractTest.key(1000), ProcessIdentity.current(), 1,
                    r.clockMillis() + 60_000));
            assertEquals(0, r.lookupPrefix(keys, 60).size()); // connections to every node open, shas loaded
            cluster.nodes().get(1).pause();
            try {
                PublishOutcome[] out = r.publishAll(offers(keys, 10, r.clockMillis() + 60_000));
                long unknown = Arrays.stream(out).filter(Objects::isNull).count();
                long published = Arrays.stream(out).filter(o -> o == PublishOutcome.PUBLISHED).count();
                assertTrue(unknown > 0 && published > 0 && unknown + published == 60, Arrays.toString(out));
            } finally {
                cluster.nodes().get(1).resume();
            }
        }
    }

    /** A master restarted empty: the registry recovers by itself, lookups and publishes answer again. */
    @Test
    void aRestartedMasterRecovers() throws Exception {
        assumeTrue(RedisCluster.installed(),
                "redis-server or redis-cli is not installed here; the Redis Cluster recovery tests are skipped");
        try (RedisCluster cluster = RedisCluster.start(dir, 3);
             RedisRegistry r = RedisRegistry.open(cluster.uri(), "crestart")) {
            ChunkKey[] keys = RegistryContractTest.keys(30);
            for (PublishOutcome o : r.publishAll(offers(keys, 10, r.clockMillis() + 60_000))) {
                assertEquals(PublishOutcome.PUBLISHED, o);
            }
            RedisServer node = cluster.nodes().get(1);
            node.restart();
            long t0 = System.nanoTime();
            String last = "";
            boolean lookedUp = false;
            boolean published = false;
            while (System.nanoTime() - t0 < 20_000_000_000L && !(lookedUp && published)) {
                try {
                    List<Offer> found = r.lookupPrefix(keys, 30);
                    lookedUp = true;
                    PublishOutcome[] out = r.publishAll(offers(keys, 1000, r.clockMillis() + 60_000));
                    published = Arrays.stream(out).noneMatch(Objects::isNull);
                    last = "found " + found.size() + " outcomes " + Arrays.toString(out);
                } catch (RuntimeException e) {
                    last = e.toString();
                }
                Thread.sleep(200);
            }
            assertTrue(lookedUp && published, "not recovered within 20 s: " + last);
        }
    }
}
