package io.kvmarket.examples.jlama;

import com.github.tjake.jlama.model.AbstractModel;
import com.github.tjake.jlama.tensor.KvBufferCache;
import io.kvmarket.KvMarketplace;
import io.kvmarket.key.Namespace;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.function.UnaryOperator;

import static io.kvmarket.examples.jlama.JlamaMarketplaceTest.concat;
import static io.kvmarket.examples.jlama.JlamaMarketplaceTest.tokens;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Careless and hostile use of {@link JlamaEngine} in one JVM (C1 only, so every answer is compared bit for bit). */
@Timeout(300)
class JlamaEngineAbuseTest {

    static final int TPB = 16;
    static final int CHUNK = 16;

    @TempDir
    static Path dir;
    static Path modelDir;
    static AbstractModel model;
    static AbstractModel other;
    static KvBufferCache buffers;
    static KvBufferCache otherBuffers;
    static JlamaEngine alone;

    @BeforeAll
    static void load() throws Exception {
        modelDir = dir.resolve("model");
        RandomLlama.write(modelDir, new RandomLlama.Shape(2, 64, 4, 2, 128, 512), 42);
        model = JlamaExporter.load(modelDir);
        Path otherDir = dir.resolve("other");
        // 4 KV heads of 32: rows four times as wide as the first model's
        RandomLlama.write(otherDir, new RandomLlama.Shape(2, 128, 4, 4, 128, 512), 7);
        other = JlamaExporter.load(otherDir);
        buffers = new KvBufferCache(model);
        otherBuffers = new KvBufferCache(other);
        alone = JlamaEngine.alone(model, 510);
    }

    @AfterAll
    static void close() {
        if (alone != null) {
            alone.close();
        }
        if (buffers != null) {
            buffers.close();
            otherBuffers.close();
        }
        if (model != null) {
            model.close();
        }
        if (other != null) {
            other.close();
        }
    }

    static Namespace freshNamespace() {
        return JlamaKv.namespace(model, modelDir, "hostile-llama", "rev " + UUID.randomUUID(), TPB);
    }

    static JlamaEngine market(Namespace ns, int maxTokens) {
        return market(ns, maxTokens, b -> b.chunkTokens(CHUNK));
    }

    static JlamaEngine market(Namespace ns, int maxTokens, UnaryOperator<KvMarketplace.Builder> settings) {
        return JlamaEngine.withMarketplace(model, ns, maxTokens, settings);
    }

    static void assertSameAnswer(JlamaEngine.Generation expected, JlamaEngine.Generation actual, String what) {
        assertArrayEquals(expected.firstLogits(), actual.firstLogits(), what + ": first logits (" + actual.importNote()
                + ")");
        assertArrayEquals(expected.tokens(), actual.tokens(), what + ": tokens (" + actual.importNote() + ")");
    }

    /** A follow-up turn (prompt + answer + more) imports the KV the first turn computed while decoding. */
    @Test
    void aFollowUpTurnThatImportsTheAnswersKvAnswersAsAFullPrefill() {
        Namespace ns = freshNamespace();
        int[] prompt = tokens(40, 11, true);
        try (JlamaEngine first = market(ns, 256); JlamaEngine second = market(ns, 256)) {
            JlamaEngine.Generation turn1 = first.generate(prompt, 30);
            assertSameAnswer(alone.generate(prompt, 30), turn1, "turn 1");
            int[] followUp = concat(concat(prompt, turn1.tokens()), tokens(5, 12, false));
            JlamaEngine.Generation turn2 = second.generate(followUp, 4);
            assertEquals(64, turn2.tokensImported(), turn2.importNote());
            assertSameAnswer(alone.generate(followUp, 4), turn2, "turn 2 importing generated tokens' KV");
        }
    }

    /** Importing generated tokens' KV through a chain: a second importer imports what the first re-exported. */
    @Test
    void aChainOfImportersAnswersAsAFullPrefill() {
        Namespace ns = freshNamespace();
        int[] prompt = tokens(20, 21, true);
        try (JlamaEngine a = market(ns, 256); JlamaEngine b = market(ns, 256); JlamaEngine c = market(ns, 256)) {
            JlamaEngine.Generation ga = a.generate(prompt, 20);
            int[] p2 = concat(concat(prompt, ga.tokens()), tokens(10, 22, false));
            JlamaEngine.Generation gb = b.generate(p2, 20);
            assertSameAnswer(alone.generate(p2, 20), gb, "b");
            int[] p3 = concat(concat(p2, gb.tokens()), tokens(3, 23, false));
            JlamaEngine.Generation gc = c.generate(p3, 5);
            assertTrue(gc.tokensImported() >= 64, gc.importNote());
            assertSameAnswer(alone.generate(p3, 5), gc, "c");
        }
    }

    /** Prompts of 1, chunk - 1, chunk, chunk + 1, 2 chunks, 2 chunks + 1 tokens, after another engine exported. */
    @Test
    void promptLengthsAroundChunkBoundariesAnswerAsAFullPrefill() {
        Namespace ns = freshNamespace();
        int[] longPrompt = tokens(70, 31, true);
        try (JlamaEngine seeder = market(ns, 256)) {
            seeder.generate(longPrompt, 1);
            for (int len : new int[] {1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 2 * CHUNK + 1, 70}) {
                int[] prompt = Arrays.copyOf(longPrompt, len);
                for (int newTokens : new int[] {1, 3}) {
                    try (JlamaEngine importer = market(ns, 256)) {
                        JlamaEngine.Generation g = importer.generate(prompt, newTokens);
                        assertEquals((len - 1) / CHUNK * CHUNK, g.tokensImported(), len + ": " + g.importNote());
                        assertSameAnswer(alone.generate(prompt, newTokens), g, "prompt of " + len + " + " + newTokens);
                    }
                }
            }
        }
    }

    /** The same engine asked the same prompt twice imports its own offer the second time. */
    @Test
    void anEngineImportingItsOwnExportAnswersTheSame() {
        Namespace ns = freshNamespace();
        int[] prompt = tokens(50, 41, true);
        try (JlamaEngine engine = market(ns, 256)) {
            JlamaEngine.Generation g1 = engine.generate(prompt, 5);
            JlamaEngine.Generation g2 = engine.generate(prompt, 5);
            assertEquals(48, g2.tokensImported(), g2.importNote());
            assertSameAnswer(g1, g2, "second time");
            assertSameAnswer(alone.generate(prompt, 5), g2, "vs alone");
        }
    }

    @Test
    void maxTokensAtTheModelsUsableLimit() {
        int usable = JlamaEngine.usablePositions(model);
        assertEquals(510, usable);
        assertThrows(IllegalArgumentException.class, () -> JlamaEngine.alone(model, usable + 1));
        assertThrows(IllegalArgumentException.class, () -> JlamaEngine.alone(model, 0));
        Namespace ns = freshNamespace();
        int[] prompt = tokens(usable - 3, 51, true);
        try (JlamaEngine a = market(ns, usable); JlamaEngine b = market(ns, usable)) {
            JlamaEngine.Generation ga = a.generate(prompt, 3);
            JlamaEngine.Generation gb = b.generate(prompt, 3);
            assertEquals((prompt.length - 1) / CHUNK * CHUNK, gb.tokensImported(), gb.importNote());
            assertSameAnswer(ga, gb, "at the limit");
            assertThrows(IllegalArgumentException.class, () -> a.generate(prompt, 4));
        }
    }

    @Test
    void badRequestsThrowIllegalArgumentBeforeAnything() {
        try (JlamaEngine engine = market(freshNamespace(), 64);
             KvBufferCache.KvBuffer kv = buffers.getEphemeralKvBuffer()) {
            int vocab = model.getConfig().vocabularySize;
            assertThrows(IllegalArgumentException.class, () -> engine.generate(null, 1));
            assertThrows(IllegalArgumentException.class, () -> engine.generate(new int[0], 1));
            assertThrows(IllegalArgumentException.class, () -> engine.generate(new int[] {1, 2}, 0));
            assertThrows(IllegalArgumentException.class, () -> engine.generate(new int[] {1, 2}, -5));
            assertThrows(IllegalArgumentException.class, () -> engine.generate(new int[] {1, -1}, 1));
            assertThrows(IllegalArgumentException.class, () -> engine.generate(new int[] {1, vocab}, 1));
            assertThrows(IllegalArgumentException.class, () -> engine.generate(null, new int[] {1, 2}, 1));
            assertThrows(IllegalArgumentException.class, () -> engine.generate(new int[60], 5));
            assertThrows(IllegalArgumentException.class,
                    () -> engine.generate(new int[] {1}, Integer.MAX_VALUE));
            assertThrows(IllegalArgumentException.class, () -> JlamaEngine.withMarketplace(model, null, 64,
                    b -> b));
            // still works afterwards
            int[] prompt = tokens(20, 61, true);
            assertSameAnswer(alone.generate(prompt, 2), engine.generate(kv, prompt, 2), "after bad requests");
        }
    }

    /**
     * A buffer of another model (rows 4x as wide) is refused before anything is imported, computed or offered: with
     * an import its rows would be copied at the wrong width, and then offered under this model's namespace.
     */
    @Test
    void aBufferOfAnotherModelIsRefusedBeforeAnythingMoves() {
        Namespace ns = freshNamespace();
        int[] prompt = tokens(40, 72, true);
        try (JlamaEngine seeder = market(ns, 128); JlamaEngine engine = market(ns, 128);
             KvBufferCache.KvBuffer foreign = otherBuffers.getEphemeralKvBuffer()) {
            seeder.generate(prompt, 1); // offers [0, 32)
            assertThrows(IllegalArgumentException.class, () -> engine.generate(foreign, prompt, 30));
            assertEquals(0, engine.marketplace().metrics().snapshot().matches(), "refused before the match");
            assertEquals(0, engine.marketplace().metrics().snapshot().chunksExported());
            assertSameAnswer(alone.generate(prompt, 2), engine.generate(prompt, 2), "the engine afterwards");
        }
    }

    /** A buffer reused from an earlier request (another prompt), and one closed, give the right answer. */
    @Test
    void aReusedOrClosedBufferGivesTheRightAnswer() {
        Namespace ns = freshNamespace();
        int[] p1 = tokens(60, 81, true);
        int[] p2 = concat(Arrays.copyOf(p1, 20), tokens(30, 82, false));
        try (JlamaEngine engine = market(ns, 128)) {
            KvBufferCache.KvBuffer kv = buffers.getEphemeralKvBuffer();
            engine.generate(kv, p1, 4);
            assertSameAnswer(alone.generate(p2, 4), engine.generate(kv, p2, 4), "reused buffer");
            kv.close();
            assertSameAnswer(alone.generate(p1, 4), engine.generate(kv, p1, 4), "closed buffer");
            kv.close();
        }
    }

    @Test
    void generateAfterCloseThrowsIllegalState() {
        JlamaEngine engine = market(freshNamespace(), 64);
        engine.close();
        engine.close();
        assertThrows(IllegalStateException.class, () -> engine.generate(new int[] {1, 2}, 1));
        try (KvBufferCache.KvBuffer kv = buffers.getEphemeralKvBuffer()) {
            assertThrows(IllegalStateException.class, () -> engine.generate(kv, new int[] {1, 2}, 1));
        }
    }

    /** close() from another thread while a request runs: the request finishes, later ones are refused. */
    @Test
    void closeWhileGenerating() throws Exception {
        JlamaEngine engine = market(freshNamespace(), 256);
        int[] prompt = tokens(100, 91, true);
        ExecutorService pool = Executors.newFixedThreadPool(2);
        try {
            CountDownLatch started = new CountDownLatch(1);
            Future<JlamaEngine.Generation> running = pool.submit(() -> {
                started.countDown();
                return engine.generate(prompt, 20);
            });
            started.await();
            Thread.sleep(200);
            Future<?> closing = pool.submit(engine::close);
            JlamaEngine.Generation g = running.get(120, TimeUnit.SECONDS);
            closing.get(120, TimeUnit.SECONDS);
            assertSameAnswer(alone.generate(prompt, 20), g, "request racing close");
            assertThrows(IllegalStateException.class, () -> engine.generate(prompt, 1));
        } finally {
            pool.shutdownNow();
            engine.close();
        }
    }

    /** Two engines on one model from two threads at once (as two request threads of one server would). */
    @Test
    void twoEnginesSharingAModelConcurrently() throws Exception {
        Namespace ns = freshNamespace();
        int[] p1 = tokens(80, 101, true);
        int[] p2 = tokens(80, 102, true);
        JlamaEngine.Generation e1 = alone.generate(p1, 10);
        JlamaEngine.Generation e2 = alone.generate(p2, 10);
        ExecutorService pool = Executors.newFixedThreadPool(2);
        try (JlamaEngine a = market(ns, 128); JlamaEngine b = JlamaEngine.alone(model, 128)) {
            for (int round = 0; round < 2; round++) {
                Future<JlamaEngine.Generation> f1 = pool.submit(() -> a.generate(p1, 10));
                Future<JlamaEngine.Generation> f2 = pool.submit(() -> b.generate(p2, 10));
                assertSameAnswer(e1, f1.get(120, TimeUnit.SECONDS), "thread 1 round " + round);
                assertSameAnswer(e2, f2.get(120, TimeUnit.SECONDS), "thread 2 round " + round);
            }
        } finally {
            pool.shutdownNow();
        }
    }

    /** One engine from four threads: requests are serialized and each gets its own answer. */
    @Test
    void oneEngineFromFourThreads() throws Exception {
        Namespace ns = freshNamespace();
        int[][] prompts = new int[4][];
        JlamaEngine.Generation[] expected = new JlamaEngine.Generation[4];
        for (int i = 0; i < 4; i++) {
            prompts[i] = concat(tokens(32, 110, true), tokens(10 + i, 111 + i, false));
            expected[i] = alone.generate(prompts[i], 3);
        }
        ExecutorService pool = Executors.newFixedThreadPool(4);
        try (JlamaEngine engine = market(ns, 128)) {
            List<Future<JlamaEngine.Generation>> f = new ArrayList<>();
            for (int i = 0; i < 4; i++) {
                int k = i;
                f.add(pool.submit(() -> engine.generate(prompts[k], 3)));
            }
            for (int i = 0; i < 4; i++) {
                assertSameAnswer(expected[i], f.get(i).get(120, TimeUnit.SECONDS), "thread " + i);
            }
        } finally {
            pool.shutdownNow();
        }
    }

    /** A pool of one chunk and the shortest offer lease: fewer chunks offered, never a wrong answer. */
    @Test
    void aTinyPoolAndShortLeases() throws Exception {
        Namespace ns = freshNamespace();
        long chunkBytes = (long) CHUNK * JlamaKv.layout(model, TPB).bytesPerToken();
        UnaryOperator<KvMarketplace.Builder> tiny = b -> b.chunkTokens(CHUNK).poolBytes(chunkBytes)
                .offerLeaseMillis(KvMarketplace.Builder.MIN_OFFER_LEASE_MS).pinLeaseMillis(1);
        int[] prompt = tokens(80, 121, true);
        JlamaEngine.Generation full = alone.generate(prompt, 3);
        try (JlamaEngine a = market(ns, 128, tiny); JlamaEngine b = market(ns, 128, tiny)) {
            a.generate(prompt, 3);
            JlamaEngine.Generation g = b.generate(prompt, 3);
            assertSameAnswer(full, g, "tiny pool");
            Thread.sleep(300);
            JlamaEngine.Generation late = b.generate(prompt, 3);
            assertSameAnswer(full, late, "after the lease");
        }
    }

    @Test
    void namespaceOfADirectoryWithoutTokenizer() throws Exception {
        Path empty = Files.createDirectories(dir.resolve("no-tokenizer"));
        assertThrows(UncheckedIOException.class, () -> JlamaKv.namespace(model, empty, "m", "r", TPB));
    }

    @Test
    void chunkNotAMultipleOfTheBlockOrSettingsReturningNull() {
        assertThrows(IllegalArgumentException.class, () -> market(freshNamespace(), 64, b -> b.chunkTokens(24)));
        assertThrows(IllegalArgumentException.class, () -> market(freshNamespace(), 64, b -> null));
        assertThrows(IllegalArgumentException.class, () -> JlamaEngine.withMarketplace(model, freshNamespace(), 64,
                null));
    }

    /** An engine whose namespace's layout is another model's: refused. */
    @Test
    void aNamespaceOfAnotherModelsLayoutIsRefused() {
        Namespace foreign = JlamaKv.namespace(other, modelDir, "hostile-llama", "r", TPB);
        assertThrows(IllegalArgumentException.class, () -> market(foreign, 64));
    }
}
