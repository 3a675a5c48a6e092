package io.kvmarket.benchmarks;

import io.kvmarket.KvMarketplace;
import io.kvmarket.LoadResult;
import io.kvmarket.Match;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.examples.model.ByteTokenizer;
import io.kvmarket.examples.model.ModelConfig;
import io.kvmarket.examples.model.ModelWeights;
import io.kvmarket.examples.model.PagedKvStore;
import io.kvmarket.examples.model.Transformer;
import io.kvmarket.key.Namespace;
import io.kvmarket.kv.PagedKvCache;
import io.kvmarket.registry.shm.NodeLocalRegistry;
import io.kvmarket.testkit.ScratchDir;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.concurrent.TimeUnit;

/**
 * What the marketplace is for, on the examples' Java transformer (the demo model, 11.3 M parameters): time to
 * the first token's logits of a prompt whose first {@value #PREFIX_TOKENS} tokens another engine already
 * computed, either by importing that prefix and prefilling the {@value #SUFFIX_TOKENS} new tokens, or by
 * prefilling everything (the baseline). Both engines live in this JVM on one node-local registry and host device;
 * the cross-process copy itself is {@link HostImportBenchmark}'s subject. Setup checks once that both paths give
 * bit-identical logits and reports {@code prefill.identical_logits=} like the import benchmark reports bitexact.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.SingleShotTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Fork(value = 1, jvmArgs = {"-Xms2g", "-Xmx2g"})
@Warmup(iterations = 2)
@Measurement(iterations = 5)
public class PrefillSkipBenchmark {

    static final int PREFIX_TOKENS = 2048;
    static final int SUFFIX_TOKENS = 64;
    static final int CHUNK_TOKENS = 256;
    static final String IDENTICAL_KEY = "prefill.identical_logits=";
    private static final long SEED = 7;

    private Path dir;
    private HostDevice device;
    private NodeLocalRegistry registry;
    private Engine exporter;
    private Engine importer;
    private int[] prompt;
    private int[] table;

    @Benchmark
    public float[] importThenPrefill() {
        return importAndPrefill();
    }

    @Benchmark
    public float[] baselineFullPrefill() {
        return importer.model.prefill(table, prompt, 0, prompt.length);
    }

    @Setup(Level.Trial)
    public void setUp() throws IOException {
        dir = ScratchDir.create("kvmarket-bench-prefill-");
        try {
            ModelConfig config = ModelConfig.demo();
            ModelWeights weights = ModelWeights.random(config, SEED);
            Namespace ns = Namespace.of("kvmarket-bench/llama-demo", "seed-" + SEED + " " + config, ByteTokenizer.ID,
                    config.kvLayout());
            device = new HostDevice(dir);
            registry = NodeLocalRegistry.open(dir, NodeLocalRegistry.DEFAULT_CAPACITY);
            long chunkBytes = config.kvLayout().blockBytes() * (CHUNK_TOKENS / ModelConfig.TOKENS_PER_BLOCK);
            exporter = new Engine(config, weights, ns, PREFIX_TOKENS / CHUNK_TOKENS * chunkBytes);
            // The importer exports nothing: its pool is the one chunk the builder requires.
            importer = new Engine(config, weights, ns, chunkBytes);
            prompt = Workloads.tokens(PREFIX_TOKENS + SUFFIX_TOKENS, 11);
            for (int i = 0; i < prompt.length; i++) {
                prompt[i] = Math.floorMod(prompt[i], config.vocab());
            }
            table = new int[(prompt.length + ModelConfig.TOKENS_PER_BLOCK - 1) / ModelConfig.TOKENS_PER_BLOCK];
            Arrays.setAll(table, i -> i);
            // An earlier request computed the shared prefix and exported it.
            exporter.model.prefill(table, prompt, 0, PREFIX_TOKENS);
            int published = exporter.market.export(prompt, PREFIX_TOKENS, table).chunksPublished();
            if (published != PREFIX_TOKENS / CHUNK_TOKENS) {
                throw new IllegalStateException("the exporter did not publish the whole prefix");
            }
            Workloads.report(IDENTICAL_KEY + Arrays.equals(baselineFullPrefill(), importAndPrefill()));
        } catch (RuntimeException | IOException | Error e) {
            tearDown();
            throw e;
        }
    }

    private float[] importAndPrefill() {
        Match match = importer.market.match(prompt, prompt.length - 1);
        LoadResult loaded = importer.market.load(match, table).join();
        if (loaded.tokensImported() != PREFIX_TOKENS) {
            throw new IllegalStateException("imported " + loaded.tokensImported() + " of " + PREFIX_TOKENS
                    + " prefix tokens: " + loaded);
        }
        return importer.model.prefill(table, prompt, PREFIX_TOKENS, prompt.length);
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        try {
            for (Engine e : new Engine[] {importer, exporter}) {
                if (e != null) {
                    e.close();
                }
            }
            if (registry != null) {
                registry.close();
            }
            if (device != null) {
                device.close();
            }
        } finally {
            ScratchDir.delete(dir);
        }
    }

    /** One engine: its KV cache on the shared host device, the model over it, and its marketplace. */
    private final class Engine implements AutoCloseable {
        final Transformer model;
        final KvMarketplace market;

        Engine(ModelConfig config, ModelWeights weights, Namespace ns, long poolBytes) {
            PagedKvCache cache = new PagedKvCache(device.allocate(PagedKvCache.requiredBytes(config.kvLayout(),
                    config.maxBlocks())), config.kvLayout(), config.maxBlocks());
            model = new Transformer(weights, new PagedKvStore(cache), Runtime.getRuntime().availableProcessors());
            market = KvMarketplace.builder().namespace(ns).kvCache(cache).device(device).registry(registry)
                    .chunkTokens(CHUNK_TOKENS).poolBytes(poolBytes).build();
        }

        @Override
        public void close() {
            market.close();
            model.close();
        }
    }
}
