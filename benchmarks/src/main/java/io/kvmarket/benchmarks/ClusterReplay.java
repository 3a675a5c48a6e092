package io.kvmarket.benchmarks;

import io.kvmarket.KvMarketplace;
import io.kvmarket.LoadResult;
import io.kvmarket.Match;
import io.kvmarket.benchmarks.TraceReplay.Request;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.kv.PagedKvCache;
import io.kvmarket.node.NodeId;
import io.kvmarket.redis.RedisRegistry;
import io.kvmarket.registry.InProcessRegistry;
import io.kvmarket.testkit.ChildJvm;
import io.kvmarket.testkit.NetnsCluster;
import io.kvmarket.testkit.RedisServer;
import io.kvmarket.testkit.ScratchDir;
import io.kvmarket.transfer.DeviceIpcTransport;
import io.kvmarket.transfer.Transport;
import io.kvmarket.transfer.Transports;
import io.kvmarket.transfer.tcp.TcpTransportProvider;

import javax.imageio.ImageIO;
import java.awt.BasicStroke;
import java.awt.Color;
import java.awt.Font;
import java.awt.Graphics2D;
import java.awt.RenderingHints;
import java.awt.image.BufferedImage;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.TreeMap;
import java.util.stream.Collectors;

/**
 * {@code cluster_replay}: the Mooncake trace replayed through N engines, each a separate process on its own
 * network-namespace node, requests round robin as a plain load balancer sends them. Each engine runs two
 * marketplaces on the same requests: one on the shared Redis registry with device IPC and TCP (any engine imports
 * from any other), and one on a registry of its own (local only: a worker sees only its own cache), with the same
 * pool. The unbounded prefix-closed ideal is computed from the trace. Per total pool size it prints the hit rates,
 * the bytes each transport moved, and the Redis script calls and commands (those the scripts run included) per
 * request, and it draws hit rate against pool size for the three into a PNG. Script calls are not round trips: the
 * registry pipelines the calls of one batch.
 *
 * <p>Usage: {@code ClusterReplay TRACE.jsonl [ENGINES [TOTAL_POOL_CHUNKS ...]]} (default 4 engines, pools of 2,048,
 * 8,192 and 32,768 chunks of 512 tokens in all); {@code -Dplot=PATH} sets the PNG (default cluster_replay.png),
 * {@code -Drequests=N} replays only the trace's first N requests.
 * Needs root and redis-server.
 */
public final class ClusterReplay {

    private static final int CHUNK_TOKENS = 512;
    private static final long BYTES_PER_TOKEN = TraceReplay.LAYOUT.blockBytes() / TraceReplay.LAYOUT.tokensPerBlock();

    private ClusterReplay() {
    }

    public static void main(String[] args) throws Exception {
        if (args.length >= 1 && args[0].equals("engine")) {
            engine(args);
            return;
        }
        if (args.length == 0) {
            System.err.println("usage: ClusterReplay trace.jsonl [ENGINES [TOTAL_POOL_CHUNKS ...]]");
            System.exit(2);
        }
        Optional<String> cause = NetnsCluster.unavailabilityCause();
        if (cause.isPresent() || !RedisServer.installed()) {
            System.out.println("cluster_replay: SKIPPED (" + cause.orElse("redis-server is not installed") + ")");
            return;
        }
        List<Request> requests = TraceReplay.read(Path.of(args[0]));
        requests = requests.subList(0, Math.min(requests.size(), Integer.getInteger("requests", requests.size())));
        int engines = args.length > 1 ? Integer.parseInt(args[1]) : 4;
        List<Integer> pools = new ArrayList<>();
        for (int i = 2; i < args.length; i++) {
            pools.add(Integer.parseInt(args[i]));
        }
        if (pools.isEmpty()) {
            pools = List.of(2048, 8192, 32768);
        }
        double ideal = TraceReplay.idealHitRate(requests);
        Path dir = Files.createTempDirectory("kvmarket-cluster-replay-");
        Path secret = dir.resolve("secret");
        Files.writeString(secret, "cluster-replay-benchmark-secret");
        Files.setPosixFilePermissions(secret, PosixFilePermissions.fromString("rw-------"));
        Map<Integer, double[]> points = new TreeMap<>();
        try (NetnsCluster cluster = NetnsCluster.create(engines);
             RedisServer redis = RedisServer.start(dir, cluster.inNode(0), cluster.address(0))) {
            for (int pool : pools) {
                points.put(pool, run(cluster, redis, secret, requests, engines, pool, ideal));
            }
        } finally {
            ScratchDir.delete(dir);
        }
        Path plot = Path.of(System.getProperty("plot", "cluster_replay.png"));
        plot(points, ideal, engines, plot);
        System.out.println("cluster_replay: plot written to " + plot.toAbsolutePath());
    }

    /** One total pool size: N engine processes, the trace round robin; returns {local, marketplace} hit rates. */
    private static double[] run(NetnsCluster cluster, RedisServer redis, Path secret, List<Request> requests,
                                int engines, int totalPool, double ideal) throws IOException {
        int perEngine = totalPool / engines;
        int maxTokens = requests.stream().mapToInt(Request::inputLength).max().orElse(0);
        String prefix = "replay" + totalPool;
        List<ChildJvm> nodes = new ArrayList<>();
        long start = System.nanoTime();
        try {
            for (int n = 0; n < engines; n++) {
                nodes.add(cluster.startJvm(n, ClusterReplay.class, List.of("-Xmx1g",
                                "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-D" + NodeId.PROPERTY + "=replay-" + n,
                                "-D" + TcpTransportProvider.SECRET_FILE + "=" + secret),
                        "engine", redis.uri(), prefix, Integer.toString(perEngine), Integer.toString(maxTokens)));
            }
            for (ChildJvm node : nodes) {
                node.awaitLine("READY", Duration.ofSeconds(120));
            }
            long[] before = redisCounts(redis);
            long prompt = 0;
            long market = 0;
            long local = 0;
            Map<String, Long> bytesByTransport = new TreeMap<>();
            for (int i = 0; i < requests.size(); i++) {
                Request r = requests.get(i);
                ChildJvm node = nodes.get(i % engines);
                node.send("r " + r.inputLength() + " " + java.util.Arrays.stream(r.hashIds()).mapToObj(Long::toString)
                        .collect(Collectors.joining(",")));
                String[] w = node.awaitLine("R ", Duration.ofSeconds(60)).split(" ");
                int marketTokens = Integer.parseInt(w[1]);
                prompt += r.inputLength();
                market += marketTokens;
                local += Integer.parseInt(w[3]);
                if (marketTokens > 0) {
                    bytesByTransport.merge(w[2], marketTokens * BYTES_PER_TOKEN, Long::sum);
                }
            }
            long[] after = redisCounts(redis);
            double marketRate = (double) market / prompt;
            double localRate = (double) local / prompt;
            System.out.printf(Locale.ROOT, "cluster_replay: engines=%d pool_chunks=%d per_engine=%d requests=%d"
                            + " hit_rate_marketplace=%.4f hit_rate_local_only=%.4f ideal_unbounded=%.4f"
                            + " marketplace_over_local=%.2f bytes_by_transport=%s redis_scripts_per_request=%.1f"
                            + " redis_commands_per_request=%.1f wall_s=%.0f%n", engines, totalPool, perEngine,
                    requests.size(), marketRate, localRate, ideal, marketRate / localRate, bytesByTransport,
                    (double) (after[1] - before[1]) / requests.size(), (double) (after[0] - before[0]) / requests.size(),
                    (System.nanoTime() - start) / 1e9);
            return new double[] {localRate, marketRate};
        } finally {
            for (ChildJvm node : nodes) {
                node.close();
            }
        }
    }

    /**
     * One engine: {@code engine URI PREFIX POOL_CHUNKS MAX_TOKENS}. For each stdin line {@code r LENGTH IDS} it runs
     * match, load and export on both marketplaces and prints {@code R <marketplace tokens> <transports> <local
     * tokens>}.
     */
    private static void engine(String[] args) throws Exception {
        String uri = args[1];
        String prefix = args[2];
        long poolBytes = Long.parseLong(args[3]) * TraceReplay.LAYOUT.blockBytes()
                * (CHUNK_TOKENS / TraceReplay.LAYOUT.tokensPerBlock());
        int blocks = (Integer.parseInt(args[4]) + 15) / 16;
        int[] table = new int[blocks];
        for (int i = 0; i < blocks; i++) {
            table[i] = i;
        }
        HostDevice device = new HostDevice();
        List<Transport> transports = Transports.openAvailable(device, NodeId.local(), 60_000);
        DeviceIpcTransport ownOnly = new DeviceIpcTransport(device);
        long cacheBytes = PagedKvCache.requiredBytes(TraceReplay.LAYOUT, blocks);
        try (RedisRegistry registry = RedisRegistry.open(uri, prefix);
             InProcessRegistry own = new InProcessRegistry();
             KvMarketplace shared = KvMarketplace.builder().namespace(TraceReplay.NAMESPACE)
                     .kvCache(new PagedKvCache(device.allocate(cacheBytes), TraceReplay.LAYOUT, blocks)).device(device)
                     .registry(registry).chunkTokens(CHUNK_TOKENS).poolBytes(poolBytes).transports(transports).build();
             KvMarketplace alone = KvMarketplace.builder().namespace(TraceReplay.NAMESPACE)
                     .kvCache(new PagedKvCache(device.allocate(cacheBytes), TraceReplay.LAYOUT, blocks)).device(device)
                     .registry(own).chunkTokens(CHUNK_TOKENS).poolBytes(poolBytes).transports(List.of(ownOnly))
                     .build()) {
            System.out.println("READY");
            System.out.flush();
            BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
            for (String line = in.readLine(); line != null; line = in.readLine()) {
                String[] w = line.split(" ");
                String[] ids = w[2].split(",");
                long[] hashIds = new long[ids.length];
                for (int i = 0; i < ids.length; i++) {
                    hashIds[i] = Long.parseLong(ids[i]);
                }
                int[] tokens = TraceReplay.tokens(new Request(Integer.parseInt(w[1]), hashIds));
                LoadResult viaCluster = serve(shared, tokens, table);
                LoadResult viaOwn = serve(alone, tokens, table);
                System.out.println("R " + viaCluster.tokensImported() + " "
                        + (viaCluster.transports().isEmpty() ? "-" : viaCluster.transports()) + " "
                        + viaOwn.tokensImported());
                System.out.flush();
            }
        } finally {
            transports.forEach(Transport::close);
            ownOnly.close();
        }
    }

    /** Match, load and export of one request, as an engine runs them around its prefill. */
    private static LoadResult serve(KvMarketplace market, int[] tokens, int[] table) {
        Match m = market.match(tokens, tokens.length - 1);
        LoadResult loaded = market.load(m, table).join();
        market.export(tokens, tokens.length, table);
        return loaded;
    }

    /**
     * What Redis has run so far, from a plain {@code INFO}: {commands in all (those scripts run inside them
     * included), script calls (EVALSHA and EVAL)}.
     */
    private static long[] redisCounts(RedisServer redis) throws IOException {
        String host = redis.uri().substring("redis://".length(), redis.uri().lastIndexOf(':'));
        long[] counts = new long[2];
        try (Socket s = new Socket(host, redis.port())) {
            s.setSoTimeout(5000);
            OutputStream out = s.getOutputStream();
            out.write("INFO all\r\n".getBytes(StandardCharsets.US_ASCII));
            out.flush();
            InputStream in = s.getInputStream();
            BufferedReader r = new BufferedReader(new InputStreamReader(in, StandardCharsets.US_ASCII));
            for (String line = r.readLine(); line != null && !line.startsWith("# Errorstats"); line = r.readLine()) {
                if (line.startsWith("total_commands_processed:")) {
                    counts[0] = Long.parseLong(line.substring(line.indexOf(':') + 1).trim());
                } else if (line.startsWith("cmdstat_evalsha:") || line.startsWith("cmdstat_eval:")) {
                    String calls = line.substring(line.indexOf("calls=") + 6);
                    counts[1] += Long.parseLong(calls.substring(0, calls.indexOf(',')));
                }
            }
        }
        return counts;
    }

    /** Hit rate against total pool size (log scale): local only, marketplace, and the unbounded ideal. */
    private static void plot(Map<Integer, double[]> points, double ideal, int engines, Path file) throws IOException {
        int w = 800;
        int h = 500;
        int left = 80;
        int right = 40;
        int top = 60;
        int bottom = 70;
        BufferedImage img = new BufferedImage(w, h, BufferedImage.TYPE_INT_RGB);
        Graphics2D g = img.createGraphics();
        g.setRenderingHint(RenderingHints.KEY_ANTIALIASING, RenderingHints.VALUE_ANTIALIAS_ON);
        g.setColor(Color.WHITE);
        g.fillRect(0, 0, w, h);
        g.setColor(Color.BLACK);
        g.setFont(new Font(Font.SANS_SERIF, Font.BOLD, 16));
        g.drawString("Prompt-token hit rate, Mooncake trace, " + engines + " engines round robin", left, 30);
        g.setFont(new Font(Font.SANS_SERIF, Font.PLAIN, 13));
        g.drawLine(left, h - bottom, w - right, h - bottom);
        g.drawLine(left, top, left, h - bottom);
        List<Integer> xs = new ArrayList<>(points.keySet());
        double minX = Math.log(xs.get(0));
        double maxX = Math.log(xs.get(xs.size() - 1));
        double spanX = Math.max(maxX - minX, 1e-9);
        java.util.function.DoubleUnaryOperator px = x -> left + (Math.log(x) - minX) / spanX * (w - left - right);
        java.util.function.DoubleUnaryOperator py = y -> h - bottom - y * (h - top - bottom);
        for (int t = 0; t <= 10; t += 2) {
            int y = (int) py.applyAsDouble(t / 10.0);
            g.setColor(new Color(230, 230, 230));
            g.drawLine(left + 1, y, w - right, y);
            g.setColor(Color.BLACK);
            g.drawString(String.format(Locale.ROOT, "%.1f", t / 10.0), left - 35, y + 5);
        }
        for (int x : xs) {
            int xp = (int) px.applyAsDouble(x);
            g.drawLine(xp, h - bottom, xp, h - bottom + 5);
            g.drawString(Integer.toString(x), xp - 20, h - bottom + 22);
        }
        g.drawString("export pool, chunks of 512 tokens in all (log scale)", left + 180, h - 20);
        Color[] colors = {new Color(200, 60, 40), new Color(30, 100, 200), new Color(40, 150, 60)};
        String[] names = {"local only", "marketplace", "unbounded ideal"};
        g.setStroke(new BasicStroke(2.5f));
        for (int series = 0; series < 3; series++) {
            g.setColor(colors[series]);
            int prevX = -1;
            int prevY = -1;
            for (int x : xs) {
                double y = series == 2 ? ideal : points.get(x)[series];
                int xp = (int) px.applyAsDouble(x);
                int yp = (int) py.applyAsDouble(y);
                g.fillOval(xp - 4, yp - 4, 8, 8);
                if (prevX >= 0) {
                    g.drawLine(prevX, prevY, xp, yp);
                }
                prevX = xp;
                prevY = yp;
            }
            g.fillRect(w - right - 170, top + 10 + series * 22, 14, 14);
            g.setColor(Color.BLACK);
            g.drawString(names[series], w - right - 150, top + 22 + series * 22);
        }
        g.dispose();
        ImageIO.write(img, "png", file.toFile());
    }
}
