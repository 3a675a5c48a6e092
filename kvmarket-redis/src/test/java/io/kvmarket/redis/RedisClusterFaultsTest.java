package io.kvmarket.redis;

import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.PublishOutcome;
import io.kvmarket.registry.RegistryException;
import io.kvmarket.testkit.RedisCluster;
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

    @Test
    void aKilledMasterIsARegistryFailureNotAHang() throws Exception {
        assumeTrue(RedisCluster.installed(),
                "redis-server or redis-cli is not installed here; the Redis Cluster registry tests are skipped");
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
            cluster.nodes().get(1).kill();
            assertThrows(RegistryException.class, () -> registry.lookupPrefix(keys, 12),
                    "keys on the dead master cannot be read: the registry fails, bounded by its command timeout");
            PublishOutcome[] again = registry.publishAll(offers);
            long unknown = Arrays.stream(again).filter(Objects::isNull).count();
            long kept = Arrays.stream(again).filter(o -> o == PublishOutcome.ALREADY_OFFERED).count();
            assertEquals(12, unknown + kept, "keys on live masters are still offered, the rest unknown");
            assertTrue(unknown > 0 && kept > 0, "the 12 keys span the dead master and live ones");
        }
    }
}
