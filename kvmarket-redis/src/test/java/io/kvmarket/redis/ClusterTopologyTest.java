package io.kvmarket.redis;

import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.RegistryException;
import io.kvmarket.testkit.RedisCluster;
import io.kvmarket.testkit.RedisServer;
import io.kvmarket.testkit.RegistryContractTest;
import io.lettuce.core.MigrateArgs;
import io.lettuce.core.RedisClient;
import io.lettuce.core.api.StatefulRedisConnection;
import io.lettuce.core.cluster.SlotHash;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/** Slots migrated, nodes paused and killed under a registry that only reads. */
@Timeout(180)
class ClusterTopologyTest {

    @TempDir
    Path dir;

    static final long NOW = 1_000_000;

    static <T> T onNode(RedisServer node, java.util.function.Function<StatefulRedisConnection<String, String>, T> w) {
        try (RedisClient c = RedisClient.create(node.uri()); StatefulRedisConnection<String, String> conn = c.connect()) {
            return w.apply(conn);
        }
    }

    static String id(RedisServer n) {
        return onNode(n, c -> c.sync().clusterMyId());
    }

    static RedisServer owner(List<RedisServer> nodes, int slot) {
        for (RedisServer n : nodes) {
            String myId = id(n);
            String slots = onNode(n, c -> c.sync().clusterNodes());
            for (String line : slots.split("\n")) {
                if (!line.startsWith(myId)) {
                    continue;
                }
                String[] f = line.split(" ");
                for (int i = 8; i < f.length; i++) {
                    if (f[i].startsWith("[")) {
                        continue;
                    }
                    String[] r = f[i].split("-");
                    int lo = Integer.parseInt(r[0]);
                    int hi = r.length > 1 ? Integer.parseInt(r[1]) : lo;
                    if (slot >= lo && slot <= hi) {
                        return n;
                    }
                }
            }
        }
        throw new IllegalStateException("nobody serves " + slot);
    }

    /** Writes a live offer of {@code alive} under key i, straight into the cluster through redis-cli -c. */
    static Offer[] plant(RedisCluster cluster, String prefix, ChunkKey[] keys, ProcessIdentity alive) {
        io.lettuce.core.cluster.RedisClusterClient c = io.lettuce.core.cluster.RedisClusterClient.create(
                "redis://" + cluster.uri().substring("redis-cluster://".length()));
        try (var conn = c.connect(io.lettuce.core.codec.RedisCodec.of(io.lettuce.core.codec.StringCodec.UTF8,
                io.lettuce.core.codec.ByteArrayCodec.INSTANCE))) {
            conn.sync().psetex(OfferCodec.ownerKey(prefix, 7, alive), 600_000, new byte[] {1});
            Offer[] out = new Offer[keys.length];
            for (int i = 0; i < keys.length; i++) {
                out[i] = RegistryContractTest.offer(keys[i], alive, i + 1, NOW + 60_000);
                conn.sync().set(OfferCodec.hashKey(prefix, keys[i]), OfferCodec.record(out[i]));
            }
            return out;
        } finally {
            c.shutdown();
        }
    }

    /**
     * A reader looks up, then a slot holding one of its keys moves to another node (keys migrated, the new owner
     * announced to every node). The reader must find the offer again once the cluster settled, and must not answer a
     * wrong offer on the way.
     */
    @Test
    void aReaderFindsOffersAgainAfterTheirSlotMoved() throws Exception {
        assumeTrue(RedisCluster.installed(), "no redis here");
        try (RedisCluster cluster = RedisCluster.start(dir, 3)) {
            String prefix = "hmig";
            ProcessIdentity alive = new ProcessIdentity(600_001, 9);
            ChunkKey[] keys = RegistryContractTest.keys(30);
            Offer[] offers = plant(cluster, prefix, keys, alive);
            int ownerSlot = SlotHash.getSlot(OfferCodec.ownerKey(prefix, 7, alive));
            int k = 0;
            while (SlotHash.getSlot(OfferCodec.hashKey(prefix, keys[k])) == ownerSlot) {
                k++;
            }
            String moved = OfferCodec.hashKey(prefix, keys[k]);
            int slot = SlotHash.getSlot(moved);
            List<RedisServer> nodes = cluster.nodes();
            RedisServer source = owner(nodes, slot);
            RedisServer target = nodes.stream().filter(n -> n != source).findFirst().orElseThrow();
            String sourceId = id(source);
            String targetId = id(target);
            try (RedisRegistry reader = new RedisRegistry(cluster.uri(), prefix, Duration.ofSeconds(1), () -> NOW)) {
                assertArrayEquals(offers, reader.lookupEach(Arrays.asList(keys)));

                onNode(target, c -> c.sync().clusterSetSlotImporting(slot, sourceId));
                onNode(source, c -> c.sync().clusterSetSlotMigrating(slot, targetId));
                List<String> inSlot = onNode(source, c -> c.sync().clusterGetKeysInSlot(slot, 1000));
                assertTrue(inSlot.contains(moved));
                onNode(source, c -> c.sync().migrate("127.0.0.1", target.port(), 0, 5000,
                        MigrateArgs.Builder.keys(inSlot)));
                // Mid-migration: the key lives on the target, the source answers ASK for it.
                Offer[] mid = reader.lookupEach(Arrays.asList(keys));
                for (int i = 0; i < keys.length; i++) {
                    assertTrue(mid[i] == null || mid[i].equals(offers[i]), "never a wrong offer");
                }
                String midNote = mid[k] == null ? "missed mid-migration" : "found mid-migration";

                for (RedisServer n : nodes) {
                    onNode(n, c -> c.sync().clusterSetSlotNode(slot, targetId));
                }
                long deadline = System.nanoTime() + 15_000_000_000L;
                Offer[] got;
                int tries = 0;
                do {
                    Thread.sleep(200);
                    got = reader.lookupEach(Arrays.asList(keys));
                    tries++;
                    for (int i = 0; i < keys.length; i++) {
                        assertTrue(got[i] == null || got[i].equals(offers[i]), "never a wrong offer");
                    }
                } while (got[k] == null && System.nanoTime() < deadline);
                String control = "";
                if (got[k] == null) {
                    ClusterLookupAbuseTest.setNodeScripts(reader, false);
                    control = ", while key by key finds it: " + (reader.lookupEach(Arrays.asList(keys))[k] != null);
                    ClusterLookupAbuseTest.setNodeScripts(reader, true);
                }
                assertNotNull(got[k], "the moved offer is never found again by the reader (" + midNote + ", "
                        + tries + " lookups over 15 s" + control + ")");
                assertArrayEquals(offers, got);
                assertEquals(offers[k], mid[k], "a lookup during the migration misses an offer that is there");
            }
        }
    }

    /**
     * A node SIGSTOPped, before a fresh registry ever talked to it too: every lookup fails as the registry's (never a
     * wrong or partial answer), on either path, and lookups recover once the node resumes.
     */
    @Test
    void aPausedNodeFailsLookupsUntilItResumes() throws Exception {
        assumeTrue(RedisCluster.installed(), "no redis here");
        try (RedisCluster cluster = RedisCluster.start(dir, 3)) {
            String prefix = "hpause";
            ProcessIdentity alive = new ProcessIdentity(600_002, 9);
            ChunkKey[] keys = RegistryContractTest.keys(60);
            Offer[] offers = plant(cluster, prefix, keys, alive);
            RedisServer paused = cluster.nodes().get(2);
            try (RedisRegistry warm = new RedisRegistry(cluster.uri(), prefix, Duration.ofMillis(100), () -> NOW)) {
                assertArrayEquals(offers, warm.lookupEach(Arrays.asList(keys)));
                try (RedisRegistry fresh = new RedisRegistry(cluster.uri(), prefix, Duration.ofMillis(100),
                        () -> NOW);
                     RedisRegistry freshKeyByKey = new RedisRegistry(cluster.uri(), prefix, Duration.ofMillis(100),
                        () -> NOW)) {
                    ClusterLookupAbuseTest.setNodeScripts(freshKeyByKey, false);
                    paused.pause();
                    try {
                        assertThrows(RegistryException.class, () -> warm.lookupEach(Arrays.asList(keys)));
                        assertThrows(RegistryException.class, () -> fresh.lookupEach(Arrays.asList(keys)));
                        assertThrows(RegistryException.class, () -> freshKeyByKey.lookupEach(Arrays.asList(keys)));
                    } finally {
                        paused.resume();
                    }
                    long deadline = System.nanoTime() + 10_000_000_000L;
                    Offer[] got = null;
                    while (System.nanoTime() < deadline) {
                        try {
                            got = warm.lookupEach(Arrays.asList(keys));
                            if (Arrays.equals(offers, got)) {
                                break;
                            }
                        } catch (RegistryException e) {
                            // not yet
                        }
                        Thread.sleep(100);
                    }
                    assertArrayEquals(offers, got, "recovered");
                    assertArrayEquals(offers, fresh.lookupEach(Arrays.asList(keys)));
                    assertArrayEquals(offers, freshKeyByKey.lookupEach(Arrays.asList(keys)));
                }
            }
        }
    }

    /** A node killed: RegistryException; restarted empty: its offers are gone, the rest answered exactly. */
    @Test
    void aKilledNodeFailsThenRecoversEmpty() throws Exception {
        assumeTrue(RedisCluster.installed(), "no redis here");
        try (RedisCluster cluster = RedisCluster.start(dir, 3)) {
            String prefix = "hkill";
            ProcessIdentity alive = new ProcessIdentity(600_003, 9);
            ChunkKey[] keys = RegistryContractTest.keys(40);
            Offer[] offers = plant(cluster, prefix, keys, alive);
            RedisServer victim = cluster.nodes().get(1);
            int ownerSlot = SlotHash.getSlot(OfferCodec.ownerKey(prefix, 7, alive));
            assumeTrue(owner(cluster.nodes(), ownerSlot) != victim, "the owner key lives on the victim");
            Offer[] after = offers.clone();
            for (int i = 0; i < keys.length; i++) {
                if (owner(cluster.nodes(), SlotHash.getSlot(OfferCodec.hashKey(prefix, keys[i]))) == victim) {
                    after[i] = null;
                }
            }
            try (RedisRegistry r = new RedisRegistry(cluster.uri(), prefix, Duration.ofMillis(200), () -> NOW)) {
                assertArrayEquals(offers, r.lookupEach(Arrays.asList(keys)));
                victim.kill();
                for (int i = 0; i < 3; i++) {
                    try {
                        Offer[] got = r.lookupEach(Arrays.asList(keys));
                        for (int j = 0; j < got.length; j++) {
                            assertTrue(got[j] == null || got[j].equals(offers[j]));
                        }
                    } catch (RegistryException expected) {
                        // fine
                    }
                }
                victim.restart();
                long deadline = System.nanoTime() + 20_000_000_000L;
                Offer[] got = null;
                while (System.nanoTime() < deadline) {
                    try {
                        got = r.lookupEach(Arrays.asList(keys));
                        for (int j = 0; j < got.length; j++) {
                            assertTrue(got[j] == null || got[j].equals(offers[j]));
                        }
                        if (Arrays.equals(after, got)) {
                            break;
                        }
                    } catch (RegistryException e) {
                        // not yet
                    }
                    Thread.sleep(200);
                }
                assertArrayEquals(after, got, "recovered after the restart");
            }
        }
    }
}
