package io.kvmarket.transfer.tcp;

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

import static io.kvmarket.transfer.tcp.TcpNodeProcess.FULL;
import static io.kvmarket.transfer.tcp.TcpNodeProcess.assertCutWithExactPrefix;
import static io.kvmarket.transfer.tcp.TcpNodeProcess.load;
import static io.kvmarket.transfer.tcp.TcpNodeProcess.loadUntil;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * Three nodes in network namespaces, each JVM with a private /dev/shm: Redis and a second exporter on node 0, an
 * exporter on node 1, an importer on node 2, 32 MiB of KV per prompt. Over TCP, configured as a user would (a
 * secret file, the default bind): an import byte for byte; a slow link ({@code tc tbf}) that the cost model
 * declines once it has measured it; the exporter SIGKILLed mid-transfer; the importer's link taken down
 * mid-transfer, then back; Redis stopped (SIGSTOP), then killed and restarted empty. Each ends as a complete import
 * or a miss with a reason whose imported prefix is exact, and everything recovers by itself.
 */
@Timeout(300)
class CrossNodeTcpTest {

    private static final Duration LOAD = Duration.ofSeconds(60);

    @TempDir
    Path dir;

    @Test
    void importsCrossNodesOverTcpAndFaultsAreMissesWithExactPrefixes() throws Exception {
        assumeTrue(RedisServer.installed(), "redis-server is not installed here; the cross-node tests are skipped");
        Optional<String> cause = NetnsCluster.unavailabilityCause();
        assumeTrue(cause.isEmpty(), () -> cause.get() + "; the cross-node tests are skipped");
        Path secret = TcpNodeProcess.secretFile(dir, "a-test-cluster-secret-of-some-length");
        List<String> namespaces;
        try (NetnsCluster cluster = NetnsCluster.create(3);
             RedisServer redis = RedisServer.start(dir, cluster.inNode(0), cluster.address(0))) {
            namespaces = cluster.namespaceNames();
            ChildJvm exporter = node(cluster, 1, secret, "export", redis.uri(), "7");
            ChildJvm second = node(cluster, 0, secret, "export", redis.uri(), "8");
            int chunks = TcpNodeProcess.TOKENS / 32;
            assertEquals("READY " + chunks, exporter.awaitLine("READY", Duration.ofSeconds(60)));
            assertEquals("READY " + chunks, second.awaitLine("READY", Duration.ofSeconds(60)));
            ChildJvm importer = node(cluster, 2, secret, "import", redis.uri());
            importer.awaitLine("READY", Duration.ofSeconds(60));

            for (int i = 0; i < 3; i++) { // the first runs cold: the link's figure settles after a few
                assertEquals(FULL, load(importer, "load 7"), "node 1's KV, imported on node 2 over TCP byte for byte");
            }
            assertEquals(FULL, load(importer, "costly-load 7"), "a fast link beats a 1 ms/token prefill");

            // 100 Mbit/s: 32 MiB take about 2.7 s, against 1 s to prefill. The first import runs on the seed
            // estimate and measures the link; the next is declined.
            cluster.shapeLink(2, 100);
            assertEquals(FULL, load(importer, "costly-load 7"));
            assertEquals("LOADED 0 SLOWER_THAN_PREFILL -1", load(importer, "costly-load 7"),
                    "the measured slow link makes the import slower than prefill");

            // The exporter dies 0.5 s into a 2.7 s transfer.
            importer.send("load 7");
            Thread.sleep(500);
            exporter.kill();
            String cut = importer.awaitLine("LOADED", LOAD);
            assertCutWithExactPrefix(cut);

            // The importer's link goes down 0.5 s into a transfer from node 0, then comes back.
            importer.send("load 8");
            Thread.sleep(500);
            cluster.linkDown(2);
            String stalled;
            try {
                stalled = importer.awaitLine("LOADED", LOAD);
            } finally {
                cluster.linkUp(2);
            }
            assertCutWithExactPrefix(stalled);
            cluster.unshapeLink(2);
            assertEquals(FULL, loadUntil(importer, "load 8", FULL), "imports recover by themselves once the link is back");

            // Redis stalls (SIGSTOP), then dies (SIGKILL) and comes back empty: misses with their reason meanwhile,
            // and the live exporter offers its KV again by itself.
            redis.pause();
            try {
                assertEquals("LOADED 0 REGISTRY_UNAVAILABLE -1", load(importer, "load 8"));
            } finally {
                redis.resume();
            }
            assertEquals(FULL, loadUntil(importer, "load 8", FULL), "imports recover by themselves once Redis answers");
            redis.kill();
            assertEquals("LOADED 0 REGISTRY_UNAVAILABLE -1", load(importer, "load 8"));
            redis.restart();
            assertEquals(FULL, loadUntil(importer, "load 8", FULL), "a restarted Redis learns the live offers again");
        }
        ProcessBuilder list = new ProcessBuilder("ip", "netns", "list").redirectErrorStream(true);
        String left = new String(list.start().getInputStream().readAllBytes());
        for (String ns : namespaces) {
            assertTrue(!left.contains(ns), "namespace " + ns + " left behind: " + left);
        }
    }

    private static ChildJvm node(NetnsCluster cluster, int n, Path secret, String... args) {
        // Verbs off: this test is about TCP, and the fake verbs provider of this module's tests would otherwise win.
        return TcpNodeProcess.start(cluster, n, secret, List.of("-Dkvmarket.rdma=false"), args);
    }
}
