package io.kvmarket.examples.jlama;

import com.github.tjake.jlama.model.AbstractModel;
import com.github.tjake.jlama.tensor.KvBufferCache;
import io.kvmarket.key.Namespace;
import io.kvmarket.testkit.ChildJvm;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Jlama with the marketplace in two processes on the node-local registry, as a Jlama user runs it: another
 * process answers a prompt and exports its KV, this one imports the shared prefix of its own prompt and prefills
 * the rest. Both run without C2 (see the pom), so Jlama computes alike in both and everything is compared bit for
 * bit against Jlama's own full prefill in this process.
 */
@Timeout(600)
class JlamaMarketplaceTest {

    static final int TOKENS_PER_BLOCK = 16;
    /** Two blocks a chunk, so an engine of twice the block size uses the same chunks and only its layout differs. */
    static final int CHUNK = 32;
    static final int PREFIX = 64;
    static final String MODEL_ID = "random-llama";
    static final String REVISION = "seed 42";
    static final List<String> CHILD_JVM = List.of("--add-modules=jdk.incubator.vector", "-XX:TieredStopAtLevel=1");

    @TempDir
    static Path dir;
    static Path modelDir;
    static AbstractModel model;
    static KvBufferCache buffers;
    static ChildJvm exporter;
    static int[] prefix;

    @BeforeAll
    static void start() throws Exception {
        modelDir = dir.resolve("model");
        RandomLlama.write(modelDir, new RandomLlama.Shape(2, 64, 4, 2, 128, 512), 42);
        prefix = tokens(PREFIX, 1, true);
        // The other process's prompt: the shared prefix and a question of its own; with its 4 new tokens it
        // exports exactly the prefix's 2 chunks.
        exporter = startExporter(concat(prefix, tokens(8, 2, false)), 4);
        assertEquals(JlamaExporter.READY + PREFIX / CHUNK, exporter.awaitLine(JlamaExporter.READY,
                Duration.ofMinutes(3)));
        model = JlamaExporter.load(modelDir);
        buffers = new KvBufferCache(model);
    }

    @AfterAll
    static void stop() throws Exception {
        if (exporter != null) {
            exporter.stop(Duration.ofSeconds(30));
        }
        if (buffers != null) {
            buffers.close();
        }
        if (model != null) {
            model.close();
        }
    }

    static ChildJvm startExporter(int[] prompt, int newTokens) throws IOException {
        Path file = Files.createTempFile(dir, "prompt", ".tokens");
        JlamaExporter.writeTokens(file, prompt);
        return ChildJvm.start(JlamaExporter.class, CHILD_JVM, modelDir.toString(), MODEL_ID, REVISION,
                String.valueOf(TOKENS_PER_BLOCK), String.valueOf(CHUNK), file.toString(), String.valueOf(newTokens));
    }

    /** {@code count} tokens of the byte-fallback vocabulary, the same for a seed; BOS first when asked. */
    static int[] tokens(int count, long seed, boolean bos) {
        Random r = new Random(seed);
        int[] t = new int[count];
        for (int i = 0; i < count; i++) {
            t[i] = bos && i == 0 ? 1 : 3 + r.nextInt(RandomLlama.VOCAB - 3);
        }
        return t;
    }

    static int[] concat(int[] a, int[] b) {
        int[] c = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, c, a.length, b.length);
        return c;
    }

    static Namespace namespace(String revision, int tokensPerBlock) {
        return JlamaKv.namespace(model, modelDir, MODEL_ID, revision, tokensPerBlock);
    }

    static JlamaEngine engine(Namespace ns, int chunk) {
        return JlamaEngine.withMarketplace(model, ns, 256, b -> b.chunkTokens(chunk));
    }

    /** The first position of {@code [0, positions)} where K or V of any layer differ, or -1. */
    static int firstDifference(KvBufferCache.KvBuffer a, KvBufferCache.KvBuffer b, int positions) {
        for (int p = 0; p < positions; p++) {
            for (int l = 0; l < model.getConfig().numberOfLayers; l++) {
                MemorySegment ka = a.getKeyTensorForPosition(l, p).getMemorySegment();
                MemorySegment va = a.getValTensorForPosition(l, p).getMemorySegment();
                if (ka.mismatch(b.getKeyTensorForPosition(l, p).getMemorySegment()) != -1
                        || va.mismatch(b.getValTensorForPosition(l, p).getMemorySegment()) != -1) {
                    return p;
                }
            }
        }
        return -1;
    }

    @Test
    void aSecondProcessImportsTheSharedPrefixAndAnswersAsAFullPrefillWould() {
        int[] prompt = concat(prefix, tokens(11, 3, false));
        int newTokens = 6;
        try (JlamaEngine market = engine(namespace(REVISION, TOKENS_PER_BLOCK), CHUNK);
             JlamaEngine alone = JlamaEngine.alone(model, 256);
             KvBufferCache.KvBuffer imported = buffers.getEphemeralKvBuffer();
             KvBufferCache.KvBuffer own = buffers.getEphemeralKvBuffer()) {
            JlamaEngine.Generation withImport = market.generate(imported, prompt, newTokens);
            JlamaEngine.Generation full = alone.generate(own, prompt, newTokens);

            assertEquals(PREFIX, withImport.tokensImported(), withImport.importNote());
            assertTrue(withImport.importNote().contains("device-ipc"), withImport.importNote());
            assertEquals(0, full.tokensImported());
            // The imported prefix is Jlama's own KV byte for byte, and so is everything computed after it.
            assertEquals(-1, firstDifference(imported, own, prompt.length + newTokens - 1));
            assertArrayEquals(full.firstLogits(), withImport.firstLogits());
            assertArrayEquals(full.tokens(), withImport.tokens());
        }
    }

    @Test
    void kvOfAnotherRevisionLayoutTokenizerOrModelNeverMatches() throws IOException {
        Path otherTokenizer = Files.createDirectories(dir.resolve("other-tokenizer"));
        Files.writeString(otherTokenizer.resolve("tokenizer.json"),
                Files.readString(modelDir.resolve("tokenizer.json")) + " ");
        Namespace[] others = {
            namespace("seed 43", TOKENS_PER_BLOCK),
            namespace(REVISION, 2 * TOKENS_PER_BLOCK),
            JlamaKv.namespace(model, otherTokenizer, MODEL_ID, REVISION, TOKENS_PER_BLOCK),
            JlamaKv.namespace(model, modelDir, "another-llama", REVISION, TOKENS_PER_BLOCK),
        };
        int[] prompt = concat(prefix, tokens(5, 4, false));
        JlamaEngine.Generation full;
        try (JlamaEngine alone = JlamaEngine.alone(model, 256)) {
            full = alone.generate(prompt, 2);
        }
        for (Namespace ns : others) {
            try (JlamaEngine market = engine(ns, CHUNK)) {
                JlamaEngine.Generation g = market.generate(prompt, 2);
                assertEquals(0, g.tokensImported(), ns + ": " + g.importNote());
                assertArrayEquals(full.firstLogits(), g.firstLogits());
            }
        }
        // The same prompt in the exporter's namespace imports the prefix: only the namespaces kept them apart.
        try (JlamaEngine market = engine(namespace(REVISION, TOKENS_PER_BLOCK), CHUNK)) {
            assertEquals(PREFIX, market.generate(prompt, 2).tokensImported());
        }
    }

    @Test
    void anExporterKilledBeforeTheImportIsAMissAndTheAnswerIsUnchanged() throws Exception {
        int[] shared = tokens(PREFIX, 5, true);
        try (ChildJvm doomed = startExporter(concat(shared, tokens(4, 6, false)), 1)) {
            doomed.awaitLine(JlamaExporter.READY, Duration.ofMinutes(3));
            doomed.kill();
        }
        int[] prompt = concat(shared, tokens(7, 7, false));
        try (JlamaEngine market = engine(namespace(REVISION, TOKENS_PER_BLOCK), CHUNK);
             JlamaEngine alone = JlamaEngine.alone(model, 256)) {
            JlamaEngine.Generation g = market.generate(prompt, 3);
            JlamaEngine.Generation full = alone.generate(prompt, 3);
            assertEquals(0, g.tokensImported(), g.importNote());
            assertArrayEquals(full.firstLogits(), g.firstLogits());
            assertArrayEquals(full.tokens(), g.tokens());
        }
    }
}
