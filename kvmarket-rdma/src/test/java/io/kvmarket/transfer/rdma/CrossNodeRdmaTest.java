package io.kvmarket.transfer.rdma;

import io.kvmarket.testkit.ChildJvm;
import io.kvmarket.testkit.NetnsCluster;
import io.kvmarket.testkit.RedisServer;
import io.kvmarket.transfer.tcp.TcpNodeProcess;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Optional;

import static io.kvmarket.transfer.tcp.TcpNodeProcess.FULL;
import static io.kvmarket.transfer.tcp.TcpNodeProcess.assertCutWithExactPrefix;
import static io.kvmarket.transfer.tcp.TcpNodeProcess.loadUntil;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * Three nodes in network namespaces, each JVM with a private /dev/shm and the fake verbs provider, whose GID names
 * the node's own address: Redis on node 0, an exporter on node 1, an importer on node 2, 32 MiB of KV per prompt,
 * configured as a user would (a secret file, default binds). Imports go by RDMA READ (the transport ranked first)
 * byte for byte; the exporter SIGKILLed mid-transfer and the importer's link taken down mid-transfer each end as a
 * miss whose imported prefix is exact, and imports recover by themselves once the link is back.
 */
@Timeout(300)
class CrossNodeRdmaTest {

    private static final Duration LOAD = Duration.ofSeconds(60);

    @TempDir
    Path dir;

    @BeforeAll
    static void verbs() {
        FakeVerbs.require();
    }

    @Test
    void importsCrossNodesByRdmaReadAndFaultsAreMissesWithExactPrefixes() throws Exception {
        assumeTrue(RedisServer.installed(), "redis-server is not installed here; the cross-node tests are skipped");
        Optional<String> cause = NetnsCluster.unavailabilityCause();
        assumeTrue(cause.isEmpty(), () -> cause.get() + "; the cross-node tests are skipped");
        Path secret = TcpNodeProcess.secretFile(dir, "an-rdma-test-cluster-secret-of-some-length");
        try (NetnsCluster cluster = NetnsCluster.create(3);
             RedisServer redis = RedisServer.start(dir, cluster.inNode(0), cluster.address(0))) {
            ChildJvm exporter = node(cluster, 1, secret, "export", redis.uri(), "7");
            int chunks = TcpNodeProcess.TOKENS / 32;
            assertEquals("READY " + chunks, exporter.awaitLine("READY", Duration.ofSeconds(60)));
            ChildJvm importer = node(cluster, 2, secret, "import", redis.uri());
            importer.awaitLine("READY", Duration.ofSeconds(60));
            for (int i = 0; i < 3; i++) {
                importer.send("load 7");
                assertEquals("VIA rdma", importer.awaitLine("VIA", LOAD), "RDMA ranks before TCP");
                assertEquals(FULL, importer.awaitLine("LOADED", LOAD), "node 1's KV on node 2 by RDMA READ, exact");
            }

            // 100 Mbit/s (the fake's wire is TCP): 32 MiB take about 2.7 s. The importer's link goes down 0.5 s in.
            cluster.shapeLink(2, 100);
            importer.send("load 7");
            Thread.sleep(500);
            cluster.linkDown(2);
            String stalled;
            try {
                stalled = importer.awaitLine("LOADED", LOAD);
            } finally {
                cluster.linkUp(2);
            }
            assertCutWithExactPrefix(stalled);
            assertEquals(FULL, loadUntil(importer, "load 7", FULL), "imports recover by themselves once the link is back");

            // The exporter dies 0.5 s into a transfer.
            importer.send("load 7");
            Thread.sleep(500);
            exporter.kill();
            assertCutWithExactPrefix(importer.awaitLine("LOADED", LOAD));
            cluster.unshapeLink(2);
        }
    }

    /**
     * A prefill node pushes 8 MiB into a decode node's spans by RDMA WRITE with immediate, byte for byte; then a push
     * whose sender's link goes down half way fails on both sides and leaves nothing registered.
     */
    @Test
    void pushesCrossNodesByWriteWithImmediate() throws Exception {
        Optional<String> cause = NetnsCluster.unavailabilityCause();
        assumeTrue(cause.isEmpty(), () -> cause.get() + "; the cross-node tests are skipped");
        try (NetnsCluster cluster = NetnsCluster.create(2)) {
            ChildJvm receiver = cluster.startJvm(0, RdmaNode.class, List.of(), "receive", "5", "128", "30000");
            String ticket = receiver.awaitLine("TICKET", LOAD).substring("TICKET ".length());
            ChildJvm pusher = cluster.startJvm(1, RdmaNode.class, List.of(), "push", "5", "128", ticket);
            assertEquals("PUSHED NONE", pusher.awaitLine("PUSHED", LOAD));
            assertEquals("LANDED ok", receiver.awaitLine("LANDED", LOAD));
            assertEquals("RECEIVED -1", receiver.awaitLine("RECEIVED", LOAD), "node 1's bytes in node 0's spans");

            cluster.shapeLink(0, 20); // what node 0 receives: 8 MiB take about 3.4 s
            ChildJvm slowReceiver = cluster.startJvm(0, RdmaNode.class, List.of(), "receive", "6", "128", "8000");
            String slowTicket = slowReceiver.awaitLine("TICKET", LOAD).substring("TICKET ".length());
            ChildJvm cut = cluster.startJvm(1, RdmaNode.class, List.of(), "push", "6", "128", slowTicket);
            Thread.sleep(1500);
            cluster.linkDown(1);
            try {
                String pushed = cut.awaitLine("PUSHED", LOAD);
                assertTrue(pushed.startsWith("PUSHED SOURCE_GONE"), "the receiver is out of reach: " + pushed);
                String landed = slowReceiver.awaitLine("LANDED", LOAD);
                assertTrue(landed.startsWith("LANDED failed"), "no immediate came: " + landed);
            } finally {
                cluster.linkUp(1);
            }
            slowReceiver.send("live");
            assertEquals("LIVE 1 0 0 0", slowReceiver.awaitLine("LIVE", LOAD), "nothing registered, no queue pair left");
        }
    }

    private static ChildJvm node(NetnsCluster cluster, int n, Path secret, String... args) {
        return TcpNodeProcess.start(cluster, n, secret, List.of(), args);
    }
}
