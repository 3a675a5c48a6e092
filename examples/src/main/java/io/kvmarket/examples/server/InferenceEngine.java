package io.kvmarket.examples.server;

import io.kvmarket.ExportResult;
import io.kvmarket.KvMarketplace;
import io.kvmarket.LoadResult;
import io.kvmarket.MarketplaceMetrics;
import io.kvmarket.Match;
import io.kvmarket.MissReason;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.examples.model.BlockAllocator;
import io.kvmarket.examples.model.ByteTokenizer;
import io.kvmarket.examples.model.ModelConfig;
import io.kvmarket.examples.model.ModelWeights;
import io.kvmarket.examples.model.PagedKvStore;
import io.kvmarket.examples.model.Transformer;
import io.kvmarket.key.Namespace;
import io.kvmarket.kv.PagedKvCache;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.registry.Registries;
import io.kvmarket.registry.RegistryProvider;
import io.kvmarket.registry.RegistryScope;
import io.kvmarket.registry.shm.NodeLocalRegistry;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.Arrays;
import java.util.Map;
import java.util.stream.Collectors;
import java.util.stream.IntStream;

/**
 * One model replica with its paged KV cache on a host device, serving one request at a time. With the marketplace
 * on, a request imports the longest offered prefix of its prompt before prefill and exports its KV afterwards:
 * <pre>
 * tokenize -> match(prompt, len - 1) -> allocate blocks -> load -> prefill [imported, len) -> first token (TTFT)
 *          -> decode the rest -> export -> free blocks
 * </pre>
 * The last prompt token is never imported, so its logits are always computed here. Not thread-safe.
 */
public final class InferenceEngine implements AutoCloseable {

    private static final Logger LOG = LoggerFactory.getLogger(InferenceEngine.class);
    /** Prompt tokens of the start-up warm-up, enough for the JIT to compile every hot loop. */
    private static final int WARM_UP_TOKENS = 1024;

    private final ModelConfig config;
    private final HostDevice device;
    private final BlockAllocator blocks;
    private final Transformer model;
    private final OfferRegistry registry;
    private final KvMarketplace marketplace;
    private boolean closed;

    public InferenceEngine(EngineOptions options) {
        this.config = options.model();
        this.device = new HostDevice(options.nodeDir());
        long cacheBytes = PagedKvCache.requiredBytes(config.kvLayout(), config.maxBlocks());
        PagedKvCache cache = new PagedKvCache(device.allocate(cacheBytes), config.kvLayout(), config.maxBlocks());
        ModelWeights weights = ModelWeights.random(config, options.seed());
        this.blocks = new BlockAllocator(config.maxBlocks());
        this.model = new Transformer(weights, new PagedKvStore(cache), options.threads());
        if (options.marketplace()) {
            this.registry = openRegistry(options);
            this.marketplace = KvMarketplace.builder()
                    .namespace(namespace(config, options.seed()))
                    .kvCache(cache)
                    .device(device)
                    .registry(registry)
                    .chunkTokens(options.chunkTokens())
                    // Room for the KV of two sequences of the longest length, whatever the chunk size.
                    .poolBytes(2 * cacheBytes)
                    .build();
        } else {
            this.registry = null;
            this.marketplace = null;
        }
        LOG.info("engine ready: model {} ({} parameters, seed {}), {} KV blocks, marketplace {}", config.name(),
                weights.parameters(), options.seed(), config.maxBlocks(), options.marketplace() ? "on" : "off");
    }

    /**
     * The cluster registry when one is configured ({@code kvmarket.redis.uri} with kvmarket-redis on the class path),
     * else the node-local registry in the engine's node directory.
     */
    private static OfferRegistry openRegistry(EngineOptions options) {
        RegistryProvider widest = Registries.widestAvailable();
        return widest.scope() == RegistryScope.CLUSTER ? widest.open()
                : NodeLocalRegistry.open(options.nodeDir(), NodeLocalRegistry.DEFAULT_CAPACITY);
    }

    /**
     * KV is interchangeable between engines of the same weights (model shape and seed), tokenizer and layout.
     * The revision spells out the whole shape, so changing any size never reuses KV of the old model.
     */
    static Namespace namespace(ModelConfig config, long seed) {
        return Namespace.of("kvmarket-examples/llama-" + config.name(), "seed-" + seed + " " + config,
                ByteTokenizer.ID, config.kvLayout());
    }

    public ModelConfig config() {
        return config;
    }

    /** Generates {@code maxNewTokens} tokens greedily after {@code prompt}. */
    public GenerationResult generate(String prompt, int maxNewTokens) {
        long start = System.nanoTime();
        int[] tokens = ByteTokenizer.encode(prompt);
        return run(tokens, maxNewTokens, marketplace, start);
    }

    /**
     * Runs a warm-up prompt before the first timed request, so the JIT has compiled the forward pass and, with the
     * marketplace on, the export and import paths: the first run exports the prompt (or imports it from a peer
     * that warmed up first), the second imports it.
     */
    public void warmUp() {
        int[] tokens = IntStream.range(0, Math.min(WARM_UP_TOKENS, config.maxPositions() / 2))
                .map(i -> 'a' + i % 26).toArray();
        long start = System.nanoTime();
        run(tokens, 4, marketplace, start);
        if (marketplace != null) {
            run(tokens, 4, marketplace, System.nanoTime());
        }
        LOG.info("warm-up of {} tokens took {} ms", tokens.length, (System.nanoTime() - start) / 1_000_000);
    }

    private GenerationResult run(int[] prompt, int maxNewTokens, KvMarketplace mp, long start) {
        int len = prompt.length;
        if (len == 0 || maxNewTokens <= 0) {
            throw new IllegalArgumentException("need a prompt and at least one new token, got " + len + " and "
                    + maxNewTokens);
        }
        if (len + maxNewTokens > config.maxPositions()) {
            throw new IllegalArgumentException("prompt of " + len + " tokens plus " + maxNewTokens
                    + " new tokens exceeds the model's " + config.maxPositions() + " positions");
        }
        int[] sequence = Arrays.copyOf(prompt, len + maxNewTokens);
        // Every position gets KV except the last generated token, which is never fed back.
        int withKv = len + maxNewTokens - 1;
        int[] table = blocks.allocate((withKv + ModelConfig.TOKENS_PER_BLOCK - 1) / ModelConfig.TOKENS_PER_BLOCK);
        try {
            int imported = 0;
            String transports = "";
            String importNote = "marketplace off";
            if (mp != null) {
                Match match = mp.match(prompt, len - 1);
                if (match.tokens() > 0) {
                    LoadResult loaded = mp.load(match, table).join();
                    imported = loaded.tokensImported();
                    transports = loaded.transports();
                    importNote = (imported == loaded.tokensMatched() ? "loaded all matched"
                            : "loaded " + imported + " of " + loaded.tokensMatched() + ": " + loaded.reason())
                            + (transports.isEmpty() ? "" : " over " + transports);
                } else {
                    mp.release(match);
                    importNote = "no match: " + match.reason();
                }
            }
            long prefillStart = System.nanoTime();
            sequence[len] = Transformer.greedy(model.prefill(table, sequence, imported, len));
            long firstToken = System.nanoTime();
            for (int pos = len + 1; pos < sequence.length; pos++) {
                sequence[pos] = Transformer.greedy(model.prefill(table, sequence, pos - 1, pos));
            }
            String exportNote = "";
            if (mp != null) {
                // The prompt's KV and the answer's: a follow-up turn starts with both.
                ExportResult exported = mp.export(sequence, withKv, table);
                exportNote = ", exported " + exported.chunksPublished() + " chunks (" + exported.chunksAlreadyOffered()
                        + " already offered, " + exported.chunksSkipped() + " skipped)";
            }
            double ttftMs = (firstToken - start) / 1e6;
            LOG.info("request: prompt {} tokens, imported {} ({}), prefill {} ms, ttft {} ms, total {} ms{}",
                    len, imported, importNote, (firstToken - prefillStart) / 1_000_000, Math.round(ttftMs),
                    (System.nanoTime() - start) / 1_000_000, exportNote);
            return new GenerationResult(len, imported, ttftMs,
                    Arrays.stream(sequence, len, sequence.length).boxed().toList(), transports);
        } finally {
            blocks.free(table);
        }
    }

    /** The marketplace counters as {@code key=value} lines; just {@code marketplace=off} without one. */
    public String metricsText() {
        if (marketplace == null) {
            return "marketplace=off\n";
        }
        MarketplaceMetrics.Snapshot s = marketplace.metrics().snapshot();
        Map<MissReason, Long> misses = s.missesByReason();
        return "marketplace=on\n"
                + "matches=" + s.matches() + "\n"
                + "loads=" + s.loads() + "\n"
                + "tokens_imported=" + s.tokensImported() + "\n"
                + "bytes_imported=" + s.bytesImported() + "\n"
                + "chunks_exported=" + s.chunksExported() + "\n"
                + "chunks_already_offered=" + s.chunksAlreadyOffered() + "\n"
                + "chunks_export_skipped=" + s.chunksExportSkipped() + "\n"
                + "misses=" + misses.entrySet().stream().sorted(Map.Entry.comparingByKey())
                .map(e -> e.getKey() + ":" + e.getValue()).collect(Collectors.joining(",")) + "\n";
    }

    /** Closes the marketplace (withdrawing this engine's offers) before the registry and the device it uses. */
    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        model.close();
        if (marketplace != null) {
            marketplace.close();
            registry.close();
        }
        device.close();
    }

    /** KV blocks not held by a request: all of them between requests. */
    int freeBlocks() {
        return blocks.freeBlocks();
    }
}
