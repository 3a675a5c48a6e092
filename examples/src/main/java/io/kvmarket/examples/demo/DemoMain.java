package io.kvmarket.examples.demo;

import io.kvmarket.examples.demo.Workload.Outcome;
import io.kvmarket.examples.model.ByteTokenizer;
import io.kvmarket.examples.model.ModelConfig;
import io.kvmarket.examples.model.ModelWeights;
import io.kvmarket.examples.server.EngineOptions;
import io.kvmarket.examples.server.ServerOptions;

import io.kvmarket.testkit.NetnsCluster;
import io.kvmarket.testkit.RedisServer;

import java.io.IOException;
import java.io.PrintStream;
import java.net.InetAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Locale;
import java.util.Optional;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;
import java.util.stream.Stream;

/**
 * The project's demo: two inference server processes share prefilled KV through the marketplace, against two
 * fresh servers that recompute everything. Both pairs get the same {@link Workload}; the demo prints each request
 * as it completes, a table of time to first token with and without the marketplace, and last one summary line:
 * <pre>
 * summary: requests=N hit_rate=X tokens_imported=Y ttft_on_ms=A ttft_off_ms=B ratio=A/B identical_outputs=true|false
 * </pre>
 * where the means A and B are over the requests that imported a prefix. Exits 0 when every generated token is
 * the same with and without the marketplace. Everything lives in a fresh node directory, deleted at the end
 * unless the run failed (then its server logs are kept there).
 *
 * <p>{@code --across-nodes} runs the same workload with A and B on two nodes: network namespaces on a bridge, each
 * server with its own /dev/shm, Redis (the cluster registry) on A's node, KV moving between them over TCP under a
 * cluster secret. It needs root, iproute2 and redis-server; the table's transport column says how each import
 * travelled.
 */
public final class DemoMain {

    private static final long SEED = ServerOptions.DEFAULT_SEED;
    /**
     * One KV block per chunk, as vLLM's prefix cache shares KV: byte tokens are short, and a chat turn then
     * recomputes at most 15 tokens of the previous turn besides its new message. The library's default of 256
     * suits word-piece tokenizers and long shared documents.
     */
    private static final int CHUNK_TOKENS = 16;
    private static final PrintStream OUT = System.out;
    /** Servers running now, for the cleanup a signal runs. */
    private static final Set<ServerProcess> LIVE = ConcurrentHashMap.newKeySet();

    private DemoMain() {
    }

    public static void main(String[] args) throws Exception {
        boolean acrossNodes = List.of(args).contains("--across-nodes");
        if (args.length > (acrossNodes ? 1 : 0)) {
            System.err.println("usage: DemoMain [--across-nodes]");
            System.exit(2);
        }
        if (acrossNodes) {
            Optional<String> cause = NetnsCluster.unavailabilityCause().or(() -> RedisServer.installed()
                    ? Optional.empty() : Optional.of("redis-server is not installed"));
            if (cause.isPresent()) {
                System.err.println("the demo across nodes cannot run here: " + cause.get());
                System.exit(2);
            }
        }
        Path shm = Path.of("/dev/shm");
        Path base = Files.isDirectory(shm) && Files.isWritable(shm) ? shm : Path.of(System.getProperty("java.io.tmpdir"));
        Path nodeDir = Files.createTempDirectory(acrossNodes ? Path.of(System.getProperty("java.io.tmpdir")) : base,
                "kvmarket-demo-");
        boolean identical = false;
        try {
            identical = acrossNodes ? runAcrossNodes(nodeDir) : run(nodeDir, List.of(Placement.local(nodeDir),
                    Placement.local(nodeDir)));
        } finally {
            if (identical) {
                deleteTree(nodeDir);
            } else {
                OUT.println("node directory and server logs kept in " + nodeDir);
            }
        }
        System.exit(identical ? 0 : 1);
    }

    /** Two nodes, Redis on the first, a cluster secret in {@code dir}; A on node 0, B on node 1. */
    private static boolean runAcrossNodes(Path dir) throws IOException, InterruptedException {
        Path secret = dir.resolve("cluster.secret");
        Files.writeString(secret, UUID.randomUUID() + "-" + UUID.randomUUID());
        Files.setPosixFilePermissions(secret, PosixFilePermissions.fromString("rw-------"));
        try (NetnsCluster cluster = NetnsCluster.create(2);
             RedisServer redis = RedisServer.start(dir, cluster.inNode(0), cluster.address(0))) {
            // Ctrl-C or a kill skips the closes below: the servers, Redis and the nodes must not outlive the demo.
            Thread hook = new Thread(() -> {
                LIVE.forEach(ServerProcess::kill);
                redis.close();
                cluster.close();
            }, "demo-cleanup");
            Runtime.getRuntime().addShutdownHook(hook);
            try {
                return runOnNodes(dir, cluster, redis, secret);
            } finally {
                try {
                    Runtime.getRuntime().removeShutdownHook(hook);
                } catch (IllegalStateException exiting) {
                    // the hook is running or has run
                }
            }
        }
    }

    private static boolean runOnNodes(Path dir, NetnsCluster cluster, RedisServer redis, Path secret)
            throws IOException, InterruptedException {
        OUT.println("nodes: A on " + cluster.address(0) + " (with Redis), B on " + cluster.address(1)
                + ", TCP between them under a cluster secret");
        List<Placement> nodes = new ArrayList<>();
        for (int n = 0; n < 2; n++) {
            nodes.add(new Placement(cluster.inNode(n), List.of("-Dkvmarket.redis.uri=" + redis.uri(),
                    "-Dkvmarket.cluster.secretFile=" + secret, "-Dkvmarket.node.id=demo-node-" + n),
                    InetAddress.getByName(cluster.address(n)), Path.of("/dev/shm/kvmarket-node")));
        }
        return run(dir, nodes);
    }

    /**
     * Where a server runs: the command prefix entering its node (empty on this one), its JVM flags, the address it
     * serves HTTP on, and its node directory.
     */
    private record Placement(List<String> prefix, List<String> jvmArgs, InetAddress bind, Path nodeDir) {
        static Placement local(Path nodeDir) {
            return new Placement(List.of(), List.of(), InetAddress.getLoopbackAddress(), nodeDir);
        }
    }

    private static boolean run(Path nodeDir, List<Placement> servers) throws IOException, InterruptedException {
        ModelConfig model = ModelConfig.demo();
        Workload workload = new Workload();
        int threads = Runtime.getRuntime().availableProcessors();
        OUT.printf(Locale.ROOT, "model: %d layers, dim %d, %d query / %d KV heads of %d, MLP %d, %,d parameters, fp32 KV"
                        + " in blocks of %d tokens%n", model.layers(), model.dim(), model.heads(), model.kvHeads(),
                model.headDim(), model.hidden(), ModelWeights.random(model, SEED).parameters(),
                ModelConfig.TOKENS_PER_BLOCK);
        OUT.printf(Locale.ROOT, "workload: %d requests, shared system prompt of %d tokens, %d new tokens each;"
                        + " chunks of %d tokens; %d threads per server%n", workload.requests(),
                ByteTokenizer.encode(workload.systemPrompt()).length, Workload.MAX_NEW_TOKENS, CHUNK_TOKENS, threads);
        OUT.println("node directory: " + nodeDir);

        List<Outcome> on = runPhase("on", true, nodeDir, servers, workload, model, threads);
        List<Outcome> off = runPhase("off", false, nodeDir, servers, workload, model, threads);

        Summary summary = Summary.of(on, off);
        OUT.println();
        OUT.printf(Locale.ROOT, "%-7s %-6s %7s %9s %-14s %12s %12s%n", "id", "server", "prompt", "imported",
                "transport", "ttft_on_ms", "ttft_off_ms");
        for (int i = 0; i < on.size(); i++) {
            Outcome o = on.get(i);
            String transport = o.result().transports().isEmpty() ? "-" : o.result().transports();
            OUT.printf(Locale.ROOT, "%-7s %-6s %7d %9d %-14s %12.1f %12.1f%n", o.id(), o.server(),
                    o.result().promptTokens(), o.result().importedTokens(), transport, o.result().ttftMs(),
                    off.get(i).result().ttftMs());
        }
        OUT.println();
        OUT.println(summary.line());
        return summary.identicalOutputs();
    }

    /** Starts servers A and B with the marketplace on or off, runs the workload on them, and stops them. */
    private static List<Outcome> runPhase(String label, boolean marketplace, Path logDir, List<Placement> servers,
                                          Workload workload, ModelConfig model, int threads)
            throws IOException, InterruptedException {
        OUT.printf("[%-3s] starting servers A and B (marketplace %s) ...%n", label, label);
        try (ServerProcess a = launch("A", servers.get(0), label, marketplace, logDir, model, threads);
             ServerProcess b = launch("B", servers.get(1), label, marketplace, logDir, model, threads)) {
            a.awaitListening();
            b.awaitListening();
            List<Outcome> outcomes = workload.run(a, b, o -> OUT.printf(Locale.ROOT,
                    "[%-3s] %-6s on %s: prompt %5d tokens, imported %5d%s, ttft %8.1f ms%n", label, o.id(),
                    o.server(), o.result().promptTokens(), o.result().importedTokens(),
                    o.result().transports().isEmpty() ? "" : " over " + o.result().transports(), o.result().ttftMs()));
            if (marketplace) {
                OUT.println("[on ] metrics A: " + a.metrics().strip().replace('\n', ' '));
                OUT.println("[on ] metrics B: " + b.metrics().strip().replace('\n', ' '));
            }
            return outcomes;
        }
    }

    private static ServerProcess launch(String name, Placement p, String label, boolean marketplace, Path logDir,
                                        ModelConfig model, int threads) throws IOException {
        ServerOptions options = new ServerOptions(0, p.bind(),
                new EngineOptions(model, SEED, p.nodeDir(), marketplace, CHUNK_TOKENS, threads));
        return ServerProcess.launch(name, options, logDir.resolve("server-" + label + "-" + name + ".log"), p.prefix(),
                p.jvmArgs(), LIVE);
    }

    private static void deleteTree(Path dir) throws IOException {
        try (Stream<Path> paths = Files.walk(dir)) {
            for (Path p : paths.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(p);
            }
        }
    }
}
