package io.kvmarket.redis;

import io.kvmarket.node.NodeId;
import io.kvmarket.testkit.ChildJvm;
import io.kvmarket.testkit.NetnsCluster;
import io.kvmarket.testkit.RedisServer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Optional;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * Three nodes in network namespaces, each JVM with a private /dev/shm: Redis on node 0, an exporter on node 1,
 * an importer on node 2. Until a network transport exists the importer finds node 1's offers and reports
 * NO_TRANSPORT; faults are real: the exporter SIGKILLed, the importer's link taken down.
 */
@Timeout(180)
class CrossNodeRegistryTest {

    @TempDir
    Path dir;

    @Test
    void offersCrossNodesThroughRedisAndFaultsAreMissesWithTheirReason() throws Exception {
        assumeTrue(RedisServer.installed(), "redis-server is not installed here; the cross-node tests are skipped");
        Optional<String> cause = NetnsCluster.unavailabilityCause();
        assumeTrue(cause.isEmpty(), () -> cause.get() + "; the cross-node tests are skipped");
        List<String> namespaces;
        try (NetnsCluster cluster = NetnsCluster.create(3);
             RedisServer redis = RedisServer.start(dir, cluster.inNode(0), cluster.address(0))) {
            namespaces = cluster.namespaceNames();
            ChildJvm exporter = cluster.startJvm(1, NodeProcess.class, List.of("-D" + NodeId.PROPERTY + "=node-1"),
                    "export", redis.uri(), "7");
            assertEquals("READY 4", exporter.awaitLine("READY", Duration.ofSeconds(60)));
            ChildJvm importer = cluster.startJvm(2, NodeProcess.class, List.of("-D" + NodeId.PROPERTY + "=node-2"),
                    "import", redis.uri());
            importer.awaitLine("READY", Duration.ofSeconds(60));

            assertEquals("MATCH 0 NO_TRANSPORT", match(importer, 7),
                    "node 1's offers are found from node 2, and no transport crosses nodes yet");
            assertEquals("MATCH 0 NO_OFFER", match(importer, 8), "nothing offered for another prompt");

            cluster.linkDown(2);
            try {
                assertEquals("MATCH 0 REGISTRY_UNAVAILABLE", match(importer, 7), "Redis unreachable is a miss");
            } finally {
                cluster.linkUp(2);
            }
            String back = "";
            long deadline = System.nanoTime() + Duration.ofSeconds(30).toNanos();
            while (!back.equals("MATCH 0 NO_TRANSPORT") && System.nanoTime() < deadline) {
                Thread.sleep(200);
                back = match(importer, 7);
            }
            assertEquals("MATCH 0 NO_TRANSPORT", back, "the importer's registry recovered by itself");

            exporter.kill();
            Thread.sleep(RedisRegistry.OWNER_TTL_MS + RedisRegistry.LIVENESS_CACHE_MS + 200);
            assertEquals("MATCH 0 NO_OFFER", match(importer, 7), "a dead node's offers stop within the owner TTL");
        }
        ProcessBuilder list = new ProcessBuilder("ip", "netns", "list").redirectErrorStream(true);
        String left = new String(list.start().getInputStream().readAllBytes());
        for (String ns : namespaces) {
            assertTrue(!left.contains(ns), "namespace " + ns + " left behind: " + left);
        }
    }

    private static String match(ChildJvm importer, int salt) {
        importer.send("match " + salt);
        return importer.awaitLine("MATCH", Duration.ofSeconds(30));
    }
}
