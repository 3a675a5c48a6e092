package io.kvmarket.examples.server;

import io.kvmarket.examples.model.ModelConfig;
import io.kvmarket.testkit.ChildJvm;
import io.kvmarket.testkit.NetnsCluster;
import io.kvmarket.testkit.RedisServer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.List;
import java.util.Optional;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The inference server as a cluster runs it, on two namespace nodes with Redis and TCP configured as the README
 * says: a prompt prefilled on node A is imported on node B over TCP, and B generates exactly what an engine
 * without the marketplace does.
 */
@Timeout(300)
class CrossNodeServerTest {

    private static final long SEED = 7;
    private static final String PROMPT = ("The marketplace copies prefilled KV between engines. ").repeat(4)
            + "It keys chunks by the hash of every token before them.";

    @TempDir
    Path dir;

    @Test
    void aPromptPrefilledOnOneNodeIsImportedOnAnotherOverTcpWithTheSameOutput() throws Exception {
        assumeTrue(RedisServer.installed(), "redis-server is not installed here; the cross-node tests are skipped");
        Optional<String> cause = NetnsCluster.unavailabilityCause();
        assumeTrue(cause.isEmpty(), () -> cause.get() + "; the cross-node tests are skipped");
        Path secret = dir.resolve("cluster.secret");
        Files.writeString(secret, "cross-node-server-test-secret");
        Files.setPosixFilePermissions(secret, PosixFilePermissions.fromString("rw-------"));
        try (NetnsCluster cluster = NetnsCluster.create(2);
             RedisServer redis = RedisServer.start(dir, cluster.inNode(0), cluster.address(0));
             ChildServer a = server(cluster, 0, redis, secret);
             ChildServer b = server(cluster, 1, redis, secret);
             InferenceEngine off = new InferenceEngine(new EngineOptions(ModelConfig.tiny(), SEED, dir.resolve("off"),
                     false, 32, 2))) {
            GenerationResult first = a.generate(PROMPT, 6);
            String longer = PROMPT + " Engines skip the prefill of what they import.";
            GenerationResult imported = b.generate(longer, 6);
            assertEquals(256, imported.importedTokens(),
                    "node A's prompt KV: its 268 tokens hold eight whole chunks of 32");
            assertEquals("tcp", imported.transports());
            assertEquals(off.generate(longer, 6).outputTokens(), imported.outputTokens());
            assertEquals(off.generate(PROMPT, 6).outputTokens(), first.outputTokens());
        }
    }

    private static ChildServer server(NetnsCluster cluster, int n, RedisServer redis, Path secret) {
        ChildJvm child = cluster.startJvm(n, InferenceServer.class, List.of("-Dkvmarket.redis.uri=" + redis.uri(),
                        "-Dkvmarket.cluster.secretFile=" + secret, "-Dkvmarket.node.id=server-node-" + n),
                "--port", "0", "--bind", cluster.address(n), "--node-dir", "/dev/shm/kvmarket-node", "--model", "tiny",
                "--seed", String.valueOf(SEED), "--chunk-tokens", "32", "--threads", "2");
        return new ChildServer(child, cluster.address(n));
    }
}
