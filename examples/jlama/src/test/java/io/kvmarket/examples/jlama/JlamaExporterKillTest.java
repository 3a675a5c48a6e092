package io.kvmarket.examples.jlama;

import com.github.tjake.jlama.model.AbstractModel;
import io.kvmarket.key.Namespace;
import io.kvmarket.testkit.ChildJvm;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.time.Duration;

import static io.kvmarket.examples.jlama.JlamaMarketplaceTest.CHILD_JVM;
import static io.kvmarket.examples.jlama.JlamaMarketplaceTest.concat;
import static io.kvmarket.examples.jlama.JlamaMarketplaceTest.tokens;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

/** An exporter killed with SIGKILL while another process keeps importing its chunks. */
@Timeout(300)
class JlamaExporterKillTest {

    @TempDir
    static Path dir;

    @Test
    void anExporterKilledWhileImportsRunNeverChangesAnAnswer() throws Exception {
        Path modelDir = dir.resolve("model");
        RandomLlama.write(modelDir, new RandomLlama.Shape(2, 64, 4, 2, 128, 512), 42);
        int[] exported = tokens(192, 201, true);
        Path file = dir.resolve("prompt.tokens");
        JlamaExporter.writeTokens(file, exported);
        String revision = "kill " + System.nanoTime();
        AbstractModel model = JlamaExporter.load(modelDir);
        try (ChildJvm exporter = ChildJvm.start(JlamaExporter.class, CHILD_JVM, modelDir.toString(), "kill-llama",
                revision, "16", "32", file.toString(), "1");
             JlamaEngine alone = JlamaEngine.alone(model, 256)) {
            assertEquals(JlamaExporter.READY + 6, exporter.awaitLine(JlamaExporter.READY, Duration.ofMinutes(3)));
            Namespace ns = JlamaKv.namespace(model, modelDir, "kill-llama", revision, 16);
            int[] prompt = concat(exported, tokens(3, 202, false));
            JlamaEngine.Generation full = alone.generate(prompt, 2);
            assertEquals(192, request(model, ns, prompt, full).tokensImported(), "imports while the exporter lives");
            // The kill lands wherever the next requests happen to be: matching, loading or copying into Jlama.
            Thread killer = new Thread(() -> {
                try {
                    Thread.sleep(300);
                    exporter.kill();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            });
            killer.start();
            int afterKill = 0;
            while (afterKill < 2) {
                boolean wasDead = !killer.isAlive();
                request(model, ns, prompt, full);
                afterKill += wasDead ? 1 : 0;
            }
            killer.join();
        } finally {
            model.close();
        }
    }

    /** One request through a fresh engine; whatever it imported, its answer is the full prefill's. */
    private static JlamaEngine.Generation request(AbstractModel model, Namespace ns, int[] prompt,
                                                  JlamaEngine.Generation full) {
        try (JlamaEngine market = JlamaEngine.withMarketplace(model, ns, 256, b -> b.chunkTokens(32))) {
            JlamaEngine.Generation g = market.generate(prompt, 2);
            assertArrayEquals(full.firstLogits(), g.firstLogits(), g.importNote());
            assertArrayEquals(full.tokens(), g.tokens(), g.importNote());
            return g;
        }
    }
}
