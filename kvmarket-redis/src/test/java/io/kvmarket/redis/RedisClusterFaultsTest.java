package io.kvmarket.redis;

import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.PublishOutcome;
import io.kvmarket.registry.RegistryException;
import io.kvmarket.testkit.RedisCluster;
import io.kvmarket.testkit.RedisServer;
import io.kvmarket.testkit.RegistryContractTest;
import io.lettuce.core.cluster.SlotHash;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Objects;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * A Redis Cluster losing a master for real (SIGKILL, no replica to take over): a lookup over a prompt whose chunks
 * lie on every node fails as the registry's failure, which the marketplace turns into a miss, within the command
 * timeout; publishes of keys on the live nodes still land.
 */
@Timeout(120)
class RedisClusterFaultsTest {

    @TempDir
    Path dir;

    @BeforeEach
    void needsRedis() {
        assumeTrue(RedisCluster.installed(),
                "redis-server or redis-cli is not installed here; the Redis Cluster registry tests are skipped");
    }

    @Test
    void aKilledMasterIsARegistryFailureNotAHang() throws Exception {
        try (RedisCluster cluster = RedisCluster.start(dir, 3);
             RedisRegistry registry = RedisRegistry.open(cluster.uri(), "faults")) {
            ChunkKey[] keys = RegistryContractTest.keys(12);
            List<Offer> offers = new ArrayList<>();
            for (int i = 0; i < keys.length; i++) {
                offers.add(RegistryContractTest.offer(keys[i], ProcessIdentity.current(), i + 1,
                        registry.clockMillis() + 60_000));
            }
            for (PublishOutcome o : registry.publishAll(offers)) {
                assertEquals(PublishOutcome.PUBLISHED, o);
            }
            assertEquals(12, registry.lookupPrefix(keys, 12).size(), "12 keys over three masters' slots");
            RedisServer victim = cluster.nodes().get(1);
            long onLiveNodes = Arrays.stream(keys).filter(k -> ClusterTopologyTest.owner(cluster.nodes(),
                    SlotHash.getSlot(OfferCodec.hashKey("faults", k))) != victim).count();
            victim.kill();
            long before = getsOnLiveNodes(cluster, victim);
            assertThrows(RegistryException.class, () -> registry.lookupPrefix(keys, 12),
                    "keys on the dead master cannot be read: the registry fails, bounded by its command timeout");
            // A reviewer's finding: the lookup read again, key by key, after the dead node's call timed out, and
            // every key waited a timeout of its own: seconds for a batch.
            assertEquals(onLiveNodes, getsOnLiveNodes(cluster, victim) - before,
                    "the live nodes' keys are read once: a node that timed out is not read again key by key");
            PublishOutcome[] again = registry.publishAll(offers);
            long unknown = Arrays.stream(again).filter(Objects::isNull).count();
            long kept = Arrays.stream(again).filter(o -> o == PublishOutcome.ALREADY_OFFERED).count();
            assertEquals(12, unknown + kept, "keys on live masters are still offered, the rest unknown");
            assertTrue(unknown > 0 && kept > 0, "the 12 keys span the dead master and live ones");
        }
    }

    /**
     * Read key by key (as on a cluster that runs no node scripts), a lookup stops sending once a read went
     * unanswered: it fails whole anyway, and every further window would wait a timeout of its own.
     */
    @Test
    void aLookupKeyByKeyStopsAtTheFirstWindowADeadMasterLeftUnanswered() throws Exception {
        try (RedisCluster cluster = RedisCluster.start(dir, 3);
             RedisRegistry registry = RedisRegistry.open(cluster.uri(), "faults")) {
            ChunkKey[] keys = RegistryContractTest.keys(3 * RedisRegistry.PIPELINE_WINDOW);
            List<Offer> offers = new ArrayList<>();
            for (int i = 0; i < keys.length; i++) {
                offers.add(RegistryContractTest.offer(keys[i], ProcessIdentity.current(), i + 1,
                        registry.clockMillis() + 60_000));
            }
            registry.publishAll(offers);
            ClusterLookupAbuseTest.setNodeScripts(registry, false);
            RedisServer victim = cluster.nodes().get(1);
            victim.kill();
            long before = getsOnLiveNodes(cluster, victim);
            assertThrows(RegistryException.class, () -> registry.lookupEach(Arrays.asList(keys)));
            long sent = getsOnLiveNodes(cluster, victim) - before;
            assertTrue(sent <= RedisRegistry.PIPELINE_WINDOW, sent + " reads reached the live nodes: more than the"
                    + " first window's " + RedisRegistry.PIPELINE_WINDOW);
        }
    }

    /** GET calls the live nodes counted, their scripts' included (INFO commandstats). */
    private static long getsOnLiveNodes(RedisCluster cluster, RedisServer dead) {
        long sum = 0;
        for (RedisServer node : cluster.nodes()) {
            if (node == dead) {
                continue;
            }
            for (String line : ClusterTopologyTest.onNode(node, c -> c.sync().info("commandstats")).split("\r\n")) {
                if (line.startsWith("cmdstat_get:")) {
                    sum += Long.parseLong(line.replaceAll("^cmdstat_get:calls=(\\d+),.*", "$1"));
                }
            }
        }
        return sum;
    }
}
