package io.kvmarket.examples.jlama;

import com.github.tjake.jlama.model.AbstractModel;
import com.github.tjake.jlama.model.ModelSupport;
import com.github.tjake.jlama.safetensors.DType;
import io.kvmarket.key.Namespace;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.Optional;

import static io.kvmarket.examples.jlama.JlamaMarketplaceTest.concat;
import static io.kvmarket.examples.jlama.JlamaMarketplaceTest.tokens;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

/** Jlama working in bfloat16: its KV moves through the marketplace as bf16, and never meets float32 KV. */
@Timeout(300)
class JlamaBf16Test {

    @TempDir
    static Path dir;

    @Test
    void bf16KvImportsExactlyAndNeverMatchesFloat32() throws Exception {
        Path modelDir = dir.resolve("model");
        RandomLlama.write(modelDir, new RandomLlama.Shape(2, 64, 4, 2, 128, 512), 42);
        AbstractModel bf16 = ModelSupport.loadModel(modelDir.toFile(), null, DType.BF16, DType.BF16,
                Optional.empty(), Optional.empty());
        AbstractModel f32 = JlamaExporter.load(modelDir);
        try {
            Namespace ns = JlamaKv.namespace(bf16, modelDir, "bf16-llama", "seed 42", 16);
            assertEquals(io.kvmarket.kv.DType.BFLOAT16, ns.layout().dtype());
            int[] prompt = concat(tokens(64, 31, true), tokens(9, 32, false));
            try (JlamaEngine exporter = JlamaEngine.withMarketplace(bf16, ns, 128, b -> b.chunkTokens(32));
                 JlamaEngine importer = JlamaEngine.withMarketplace(bf16, ns, 128, b -> b.chunkTokens(32));
                 JlamaEngine alone = JlamaEngine.alone(bf16, 128);
                 JlamaEngine float32 = JlamaEngine.withMarketplace(f32,
                         JlamaKv.namespace(f32, modelDir, "bf16-llama", "seed 42", 16), 128, b -> b.chunkTokens(32))) {
                exporter.generate(prompt, 1);
                JlamaEngine.Generation full = alone.generate(prompt, 4);
                JlamaEngine.Generation imported = importer.generate(prompt, 4);
                assertEquals(64, imported.tokensImported(), imported.importNote());
                assertArrayEquals(full.firstLogits(), imported.firstLogits());
                assertArrayEquals(full.tokens(), imported.tokens());
                assertEquals(0, float32.generate(prompt, 1).tokensImported(), "float32 KV is another layout");
            }
        } finally {
            bf16.close();
            f32.close();
        }
    }
}
