package io.kvmarket.examples.server;

import io.kvmarket.KvMarketplace;
import io.kvmarket.LoadResult;
import io.kvmarket.Match;
import io.kvmarket.MissReason;
import io.kvmarket.device.host.HostBuffer;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.examples.model.BlockAllocator;
import io.kvmarket.examples.model.ByteTokenizer;
import io.kvmarket.examples.model.ModelConfig;
import io.kvmarket.examples.model.ModelWeights;
import io.kvmarket.examples.model.PagedKvStore;
import io.kvmarket.examples.model.Transformer;
import io.kvmarket.kv.PagedKvCache;
import io.kvmarket.registry.shm.NodeLocalRegistry;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.ByteBuffer;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;

/**
 * Imports across processes: a child JVM runs an {@link InferenceServer} that exports, this JVM imports through
 * the node-local registry and the host device's IPC handles. (One JVM cannot hold both sides: two host devices of
 * one process in one node directory would name their memory files alike.)
 */
@Timeout(120)
class KvImportTest {

    private static final ModelConfig MODEL = ModelConfig.tiny();
    private static final long SEED = 7;
    private static final int CHUNK = 32;
    /** 200 plain-text tokens. */
    private static final String PROMPT = ("The marketplace copies prefilled KV between engines. ").repeat(4)
            .substring(0, 200);

    @TempDir
    Path dir;

    private ChildServer exporter() throws Exception {
        return new ChildServer("--port", "0", "--node-dir", dir.toString(), "--model", "tiny", "--seed",
                String.valueOf(SEED), "--chunk-tokens", String.valueOf(CHUNK), "--threads", "2");
    }

    @Test
    void importedKvBytesEqualRecomputedKv() throws Exception {
        try (ChildServer child = exporter()) {
            GenerationResult exported = child.generate(PROMPT, 4);
            assertEquals(200, exported.promptTokens());
            assertEquals(0, exported.importedTokens());

            NodeLocalRegistry registry = NodeLocalRegistry.open(dir, NodeLocalRegistry.DEFAULT_CAPACITY);
            HostDevice device = new HostDevice(dir);
            PagedKvCache cache = new PagedKvCache(device.allocate(PagedKvCache.requiredBytes(MODEL.kvLayout(),
                    MODEL.maxBlocks())), MODEL.kvLayout(), MODEL.maxBlocks());
            KvMarketplace mp = KvMarketplace.builder().namespace(InferenceEngine.namespace(MODEL, SEED))
                    .kvCache(cache).device(device).registry(registry).chunkTokens(CHUNK).build();
            try (Transformer model = new Transformer(ModelWeights.random(MODEL, SEED), new PagedKvStore(cache), 2)) {
                int[] tokens = ByteTokenizer.encode(PROMPT);
                BlockAllocator blocks = new BlockAllocator(MODEL.maxBlocks());
                int[] computed = blocks.allocate(13);
                int[] imported = blocks.allocate(13);
                model.prefill(computed, tokens, 0, tokens.length);

                Match match = mp.match(tokens, tokens.length - 1);
                assertEquals(192, match.tokens(), "the child exported 6 chunks of prompt and answer");
                LoadResult load = mp.load(match, imported).join();
                assertEquals(192, load.tokensImported());
                assertEquals(MissReason.NONE, load.reason());
                assertEquals(192L * MODEL.kvLayout().bytesPerToken(), mp.metrics().snapshot().bytesImported());

                ByteBuffer memory = ((HostBuffer) cache.buffer()).memory();
                int regionBytes = (int) MODEL.kvLayout().regionBytes();
                for (int b = 0; b < 192 / ModelConfig.TOKENS_PER_BLOCK; b++) {
                    for (int r = 0; r < MODEL.kvLayout().regionsPerBlock(); r++) {
                        byte[] mine = new byte[regionBytes];
                        byte[] theirs = new byte[regionBytes];
                        memory.get((int) cache.regionOffset(computed[b], r), mine);
                        memory.get((int) cache.regionOffset(imported[b], r), theirs);
                        assertArrayEquals(mine, theirs, "block " + b + " region " + r);
                    }
                }
                assertNotEquals(0f, memory.getFloat((int) cache.regionOffset(imported[0], 0)), "imported K is not blank");
            } finally {
                mp.close();
                registry.close();
                device.close();
            }
        }
    }

    @Test
    void generationWithImportEqualsGenerationWithout() throws Exception {
        String longer = PROMPT + " Engines skip the prefill of what they import.";
        try (ChildServer child = exporter();
             InferenceEngine on = new InferenceEngine(new EngineOptions(MODEL, SEED, dir, true, CHUNK, 2));
             InferenceEngine off = new InferenceEngine(new EngineOptions(MODEL, SEED, dir.resolve("off"), false, CHUNK, 2))) {
            GenerationResult first = child.generate(PROMPT, 6);

            GenerationResult withImport = on.generate(longer, 6);
            GenerationResult without = off.generate(longer, 6);

            assertEquals(192, withImport.importedTokens());
            assertEquals(0, without.importedTokens());
            assertEquals(without.outputTokens(), withImport.outputTokens());
            assertEquals(off.generate(PROMPT, 6).outputTokens(), first.outputTokens(),
                    "the exporting process generates what this one does");
            assertEquals(MODEL.maxBlocks(), on.freeBlocks());
            assertEquals(0, child.stop(), "the child stops cleanly at end of stdin");
        }
    }
}
