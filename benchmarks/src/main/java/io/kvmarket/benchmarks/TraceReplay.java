package io.kvmarket.benchmarks;

import io.kvmarket.KvMarketplace;
import io.kvmarket.LoadResult;
import io.kvmarket.Match;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.kv.DType;
import io.kvmarket.kv.KvLayout;
import io.kvmarket.kv.LayoutOrder;
import io.kvmarket.key.Namespace;
import io.kvmarket.kv.PagedKvCache;
import io.kvmarket.registry.shm.NodeLocalRegistry;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Replays the Mooncake synthetic trace (kvcache-ai/Mooncake, FAST25-release/traces) through marketplaces on one node-local registry and the
 * host device: per request match, load, export, as an engine would. With several engines the requests go round
 * robin, as a plain load balancer sends them, each engine has its share of the pool budget, and most hits are
 * imports from another engine's pool. Each trace block id becomes 512
 * deterministic token ids (a generator seeded by the id), so equal ids give equal tokens and the marketplace's own
 * key chain decides what matches. Chunks are 512 tokens, one per trace block.
 *
 * <p>Baseline, computed in the same run: the hit rate of an unbounded, prefix-closed cache of the same full
 * chunks. The ratio shows what the export pool's budget and LRU eviction give up; with a pool that holds every
 * chunk the two must agree exactly. KV is tiny (64 bytes a token) so the replay measures keys, registry and pool,
 * not memory bandwidth.
 *
 * <p>Usage: {@code TraceReplay trace.jsonl [poolChunks[xEngines] ...]}, with a trace in the Mooncake format
 * (one JSON object per line with {@code input_length} and {@code hash_ids}); default setups: pools of 8,192 and
 * 60,000 chunks on one engine, 8,192 on four engines ({@code 8192x4}: 2,048 chunks each).
 */
public final class TraceReplay {

    private static final int BLOCK_TOKENS = 512;
    static final KvLayout LAYOUT = KvLayout.of(1, 1, 16, DType.BFLOAT16, 16, LayoutOrder.LAYER_MAJOR);
    static final Namespace NAMESPACE = Namespace.of("trace-replay", "r1", "synthetic", LAYOUT);
    private static final Pattern LENGTH = Pattern.compile("\"input_length\":\\s*(\\d+)");
    private static final Pattern IDS = Pattern.compile("\"hash_ids\":\\s*\\[([^\\]]*)]");
    private static final Pattern SETUP = Pattern.compile("(\\d+)(?:x(\\d+))?");

    private TraceReplay() {
    }

    record Request(int inputLength, long[] hashIds) {
    }

    public static void main(String[] args) throws IOException {
        if (args.length == 0) {
            System.err.println("usage: TraceReplay trace.jsonl [POOL_CHUNKS[xENGINES] ...]  (a Mooncake-format trace)");
            System.exit(2);
        }
        Path trace = Path.of(args[0]);
        List<String> setups = new ArrayList<>(List.of(args).subList(1, args.length));
        if (setups.isEmpty()) {
            setups = List.of("8192", "60000", "8192x4");
        }
        List<Request> requests = read(trace);
        double ideal = idealHitRate(requests);
        for (String setup : setups) {
            Matcher m = SETUP.matcher(setup);
            int engines = m.matches() && m.group(2) != null ? Integer.parseInt(m.group(2)) : 1;
            if (!m.matches() || engines < 1 || Integer.parseInt(m.group(1)) % engines != 0) {
                throw new IllegalArgumentException("setup " + setup + " is not POOL_CHUNKS or POOL_CHUNKSxENGINES"
                        + " with the pool a multiple of the engines");
            }
            replay(requests, Integer.parseInt(m.group(1)), engines, ideal);
        }
    }

    static List<Request> read(Path trace) throws IOException {
        List<Request> out = new ArrayList<>();
        for (String line : Files.readAllLines(trace)) {
            Matcher len = LENGTH.matcher(line);
            Matcher ids = IDS.matcher(line);
            if (!len.find() || !ids.find()) {
                continue;
            }
            String[] parts = ids.group(1).split(",");
            long[] h = new long[parts.length];
            for (int i = 0; i < parts.length; i++) {
                h[i] = Long.parseLong(parts[i].trim());
            }
            out.add(new Request(Integer.parseInt(len.group(1)), h));
        }
        return out;
    }

    /** Prompt-token hit rate of an unbounded cache holding every full chunk exported so far, prefix-closed. */
    static double idealHitRate(List<Request> requests) {
        Set<Long> cached = new HashSet<>();
        long prompt = 0;
        long hit = 0;
        for (Request r : requests) {
            int importable = (r.inputLength() - 1) / BLOCK_TOKENS;
            int k = 0;
            while (k < importable && cached.contains(r.hashIds()[k])) {
                k++;
            }
            hit += (long) k * BLOCK_TOKENS;
            prompt += r.inputLength();
            for (int i = 0; i < r.inputLength() / BLOCK_TOKENS; i++) {
                cached.add(r.hashIds()[i]);
            }
        }
        return (double) hit / prompt;
    }

    static int[] tokens(Request r) {
        int[] t = new int[r.inputLength()];
        for (int b = 0; b * BLOCK_TOKENS < t.length; b++) {
            SplittableRandom rnd = new SplittableRandom(r.hashIds()[b]);
            for (int i = b * BLOCK_TOKENS; i < Math.min(t.length, (b + 1) * BLOCK_TOKENS); i++) {
                t[i] = rnd.nextInt(128_000);
            }
        }
        return t;
    }

    private static void replay(List<Request> requests, int poolChunks, int engines, double ideal) throws IOException {
        int maxTokens = requests.stream().mapToInt(Request::inputLength).max().orElse(0);
        int blocks = (maxTokens + 15) / 16;
        int[] table = new int[blocks];
        for (int i = 0; i < blocks; i++) {
            table[i] = i;
        }
        Path dir = Files.createTempDirectory(Files.isDirectory(Path.of("/dev/shm")) ? Path.of("/dev/shm")
                : Path.of(System.getProperty("java.io.tmpdir")), "kvmarket-trace-");
        long chunkBytes = LAYOUT.blockBytes() * (BLOCK_TOKENS / LAYOUT.tokensPerBlock());
        long prompt = 0;
        long imported = 0;
        long matchNs = 0;
        long loadNs = 0;
        long exportNs = 0;
        long start = System.nanoTime();
        List<KvMarketplace> markets = new ArrayList<>();
        try (NodeLocalRegistry registry = NodeLocalRegistry.open(dir, NodeLocalRegistry.DEFAULT_CAPACITY);
             HostDevice device = new HostDevice(dir)) {
            try {
                for (int e = 0; e < engines; e++) {
                    PagedKvCache cache = new PagedKvCache(device.allocate(PagedKvCache.requiredBytes(LAYOUT, blocks)),
                            LAYOUT, blocks);
                    markets.add(KvMarketplace.builder().namespace(NAMESPACE).kvCache(cache).device(device)
                            .registry(registry).chunkTokens(BLOCK_TOKENS)
                            .poolBytes(poolChunks / engines * chunkBytes).build());
                }
                for (int i = 0; i < requests.size(); i++) {
                    Request r = requests.get(i);
                    KvMarketplace market = markets.get(i % engines);
                    int[] t = tokens(r);
                    long t0 = System.nanoTime();
                    Match m = market.match(t, t.length - 1);
                    long t1 = System.nanoTime();
                    LoadResult loaded = market.load(m, table).join();
                    long t2 = System.nanoTime();
                    market.export(t, t.length, table);
                    long t3 = System.nanoTime();
                    matchNs += t1 - t0;
                    loadNs += t2 - t1;
                    exportNs += t3 - t2;
                    prompt += t.length;
                    imported += loaded.tokensImported();
                }
                double hitRate = (double) imported / prompt;
                int n = requests.size();
                long evictions = markets.stream().mapToLong(m -> m.pool().evictions()).sum();
                System.out.printf(Locale.ROOT, "trace: requests=%d prompt_tokens=%d engines=%d pool_chunks=%d"
                                + " hit_rate=%.4f ideal_unbounded_hit_rate=%.4f ratio=%.4f evictions=%d"
                                + " match_us_mean=%.1f load_us_mean=%.1f export_us_mean=%.1f wall_s=%.1f%n",
                        n, prompt, engines, poolChunks, hitRate, ideal, hitRate / ideal, evictions,
                        matchNs / 1e3 / n, loadNs / 1e3 / n, exportNs / 1e3 / n, (System.nanoTime() - start) / 1e9);
            } finally {
                markets.forEach(KvMarketplace::close);
            }
        } finally {
            try (var files = Files.walk(dir)) {
                files.sorted(Collections.reverseOrder()).forEach(p -> p.toFile().delete());
            }
        }
    }
}
