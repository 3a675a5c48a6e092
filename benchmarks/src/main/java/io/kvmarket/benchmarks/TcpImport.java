package io.kvmarket.benchmarks;

import io.kvmarket.KvMarketplace;
import io.kvmarket.LoadResult;
import io.kvmarket.Match;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.key.Namespace;
import io.kvmarket.kv.DType;
import io.kvmarket.kv.KvLayout;
import io.kvmarket.kv.LayoutOrder;
import io.kvmarket.kv.PagedKvCache;
import io.kvmarket.node.NodeId;
import io.kvmarket.redis.RedisRegistry;
import io.kvmarket.testkit.ChildJvm;
import io.kvmarket.testkit.KvPattern;
import io.kvmarket.testkit.NetnsCluster;
import io.kvmarket.testkit.RedisServer;
import io.kvmarket.testkit.ScratchDir;
import io.kvmarket.transfer.Transport;
import io.kvmarket.transfer.Transports;
import io.kvmarket.transfer.tcp.TcpTransportProvider;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Optional;

/**
 * {@code tcp_import}: 256 MiB of paged KV (8,192 tokens of an 8-layer, 8-head, 128-dim fp16 model in 16-token
 * blocks, 256-token chunks) imported over TCP between two network-namespace nodes (Redis on the exporter's), against
 * a raw socket copy of the same bytes between the same two nodes, alternating, in the same run. Prints the median
 * of each and their ratio (target >= 0.7), and whether the last import was byte-exact: once with chunk MACs (the
 * default), once without.
 *
 * <p>Usage: {@code TcpImport [rounds]} (default 9); needs root and redis-server.
 */
public final class TcpImport {

    static final KvLayout LAYOUT = KvLayout.of(8, 8, 128, DType.FLOAT16, 16, LayoutOrder.LAYER_MAJOR);
    static final Namespace NS = Namespace.of("tcp-import-model", "rev1", "ids", LAYOUT);
    static final int TOKENS = 8192;
    static final int BLOCKS = TOKENS / 16;
    static final int CHUNK_TOKENS = 256;
    static final int SALT = 5;
    static final int RAW_PORT = 7445;

    private TcpImport() {
    }

    public static void main(String[] args) throws Exception {
        if (args.length > 0 && (args[0].equals("exporter") || args[0].equals("importer"))) {
            node(args);
            return;
        }
        int rounds = args.length > 0 ? Integer.parseInt(args[0]) : 9;
        Optional<String> cause = NetnsCluster.unavailabilityCause();
        if (cause.isPresent() || !RedisServer.installed()) {
            System.out.println("tcp_import: SKIPPED (" + cause.orElse("redis-server is not installed") + ")");
            return;
        }
        Path dir = Files.createTempDirectory("kvmarket-tcp-import-");
        Path secret = dir.resolve("secret");
        Files.writeString(secret, "tcp-import-benchmark-cluster-secret");
        Files.setPosixFilePermissions(secret, PosixFilePermissions.fromString("rw-------"));
        try (NetnsCluster cluster = NetnsCluster.create(2);
             RedisServer redis = RedisServer.start(dir, cluster.inNode(0), cluster.address(0))) {
            List<String> jvm = List.of("-Xmx512m", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                    "-D" + TcpTransportProvider.SECRET_FILE + "=" + secret);
            ChildJvm exporter = cluster.startJvm(0, TcpImport.class, with(jvm, "node-0"), "exporter", redis.uri(),
                    cluster.address(0));
            exporter.awaitLine("READY", Duration.ofSeconds(120));
            for (boolean macs : new boolean[] {true, false}) {
                List<String> importerJvm = with(jvm, "node-1");
                importerJvm.add("-D" + TcpTransportProvider.CHUNK_MACS + "=" + macs);
                ChildJvm importer = cluster.startJvm(1, TcpImport.class, importerJvm, "importer", redis.uri(),
                        cluster.address(0), Integer.toString(rounds));
                System.out.println(importer.awaitLine("tcp_import:", Duration.ofSeconds(600)));
                importer.close();
            }
        } finally {
            ScratchDir.delete(dir);
        }
    }

    private static List<String> with(List<String> jvm, String node) {
        List<String> out = new java.util.ArrayList<>(jvm);
        out.add("-D" + NodeId.PROPERTY + "=" + node);
        return out;
    }

    private static void node(String[] args) throws Exception {
        HostDevice device = new HostDevice();
        List<Transport> transports = Transports.openAvailable(device, NodeId.local(), 60_000);
        PagedKvCache cache = new PagedKvCache(device.allocate(PagedKvCache.requiredBytes(LAYOUT, BLOCKS)), LAYOUT,
                BLOCKS);
        long kvBytes = (long) BLOCKS * LAYOUT.blockBytes();
        try (RedisRegistry registry = RedisRegistry.open(args[1]);
             KvMarketplace market = KvMarketplace.builder().namespace(NS).kvCache(cache).device(device)
                     .registry(registry).chunkTokens(CHUNK_TOKENS).poolBytes(kvBytes).transports(transports).build()) {
            ByteBuffer kv = device.hostView(cache.buffer()).orElseThrow();
            int[] tokens = KvPattern.tokens(TOKENS, SALT);
            if (args[0].equals("exporter")) {
                int[] blocks = KvPattern.scattered(BLOCKS, BLOCKS, SALT);
                for (int b = 0; b < BLOCKS; b++) {
                    for (int r = 0; r < LAYOUT.regionsPerBlock(); r++) {
                        kv.put((int) cache.regionOffset(blocks[b], r),
                                KvPattern.region(SALT, b, r, (int) LAYOUT.regionBytes()));
                    }
                }
                market.export(tokens, TOKENS, blocks);
                serveRaw(args[2], kv, kvBytes);
                System.out.println("READY");
                System.out.flush();
                new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8)).readLine();
                return;
            }
            int rounds = Integer.parseInt(args[3]);
            InetSocketAddress raw = new InetSocketAddress(args[2], RAW_PORT);
            int[] into = KvPattern.scattered(BLOCKS, BLOCKS, SALT + 1);
            ByteBuffer sink = ByteBuffer.allocateDirect((int) kvBytes);
            double[] importMs = new double[rounds];
            double[] rawMs = new double[rounds];
            for (int warm = 0; warm < 2; warm++) {
                load(market, tokens, into);
                readRaw(raw, sink);
            }
            for (int i = 0; i < rounds; i++) {
                kv.put(0, new byte[kv.capacity()]); // the last import's bytes must not pass for this one's
                importMs[i] = load(market, tokens, into);
                rawMs[i] = readRaw(raw, sink);
            }
            boolean exact = true;
            for (int b = 0; b < BLOCKS && exact; b++) {
                for (int r = 0; r < LAYOUT.regionsPerBlock(); r++) {
                    byte[] got = new byte[(int) LAYOUT.regionBytes()];
                    kv.get((int) cache.regionOffset(into[b], r), got);
                    exact &= Arrays.equals(got, KvPattern.region(SALT, b, r, got.length));
                }
            }
            double imp = median(importMs);
            double base = median(rawMs);
            double ratio = base / imp;
            System.out.printf(Locale.ROOT, "tcp_import: bytes=%d import_ms=%.1f import_gbps=%.2f"
                            + " baseline_raw_socket_ms=%.1f baseline_gbps=%.2f ratio=%.2f target=>=0.7 met=%b"
                            + " bitexact=%b chunk_macs=%s rounds=%d%n", kvBytes, imp, kvBytes / imp / 1e6, base,
                    kvBytes / base / 1e6, ratio, ratio >= 0.7, exact,
                    TcpTransportProvider.configFromEnvironment().chunkMacs(), rounds);
        } finally {
            transports.forEach(Transport::close);
        }
    }

    /** Match and load of the whole prompt, in ms; fails loudly unless every token arrived. */
    private static double load(KvMarketplace market, int[] tokens, int[] into) {
        long start = System.nanoTime();
        Match m = market.match(tokens, TOKENS);
        LoadResult r = market.load(m, into).join();
        double ms = (System.nanoTime() - start) / 1e6;
        if (r.tokensImported() != TOKENS) {
            throw new IllegalStateException("import delivered " + r.tokensImported() + " tokens: " + r);
        }
        return ms;
    }

    /** The baseline: per connection, the same bytes written from memory to the socket, no protocol. */
    private static void serveRaw(String address, ByteBuffer kv, long bytes) throws Exception {
        ServerSocketChannel server = ServerSocketChannel.open().bind(new InetSocketAddress(address, RAW_PORT));
        Thread t = new Thread(() -> {
            while (true) {
                try (SocketChannel ch = server.accept()) {
                    ByteBuffer src = kv.duplicate().clear().limit((int) bytes);
                    while (src.hasRemaining()) {
                        ch.write(src);
                    }
                } catch (Exception e) {
                    return;
                }
            }
        }, "raw-socket-baseline");
        t.setDaemon(true);
        t.start();
    }

    /** Connect and read the whole prompt's bytes into memory, in ms. */
    private static double readRaw(InetSocketAddress at, ByteBuffer sink) throws Exception {
        long start = System.nanoTime();
        try (SocketChannel ch = SocketChannel.open(at)) {
            sink.clear();
            while (sink.hasRemaining()) {
                if (ch.read(sink) < 0) {
                    throw new IllegalStateException("raw baseline connection ended early");
                }
            }
        }
        return (System.nanoTime() - start) / 1e6;
    }

    private static double median(double[] xs) {
        double[] s = xs.clone();
        Arrays.sort(s);
        return s.length % 2 == 1 ? s[s.length / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
    }
}
