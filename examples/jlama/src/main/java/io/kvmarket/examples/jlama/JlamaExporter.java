package io.kvmarket.examples.jlama;

import com.github.tjake.jlama.model.AbstractModel;
import com.github.tjake.jlama.model.ModelSupport;
import com.github.tjake.jlama.safetensors.DType;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Optional;

/**
 * Another Jlama process on the node: loads a model directory, answers one prompt through a {@link JlamaEngine} with
 * the marketplace (exporting its KV), prints {@value #READY} with the number of chunks it published, and keeps
 * offering them until its standard input closes. The benchmark's and the tests' exporter.
 *
 * <p>Arguments: model directory, model id, weights revision, tokens per block, chunk tokens, a file of the prompt's
 * tokens (decimal, separated by white space), new tokens.
 */
public final class JlamaExporter {

    public static final String READY = "exported ";
    private static final int WARM_UP_RUNS = 2;

    private JlamaExporter() {
    }

    /** Loads {@code dir} with float32 weights and activations, its KV buffers in memory. */
    public static AbstractModel load(Path dir) {
        return ModelSupport.loadModel(dir.toFile(), null, DType.F32, DType.F32, Optional.empty(), Optional.empty());
    }

    /** The tokens of a file written by {@link #writeTokens}. */
    public static int[] readTokens(Path file) throws IOException {
        String text = Files.readString(file).strip();
        return text.isEmpty() ? new int[0] : Arrays.stream(text.split("\\s+")).mapToInt(Integer::parseInt).toArray();
    }

    public static void writeTokens(Path file, int[] tokens) throws IOException {
        StringBuilder s = new StringBuilder();
        for (int t : tokens) {
            s.append(t).append('\n');
        }
        Files.writeString(file, s);
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 7) {
            System.err.println("usage: JlamaExporter <model dir> <model id> <weights revision> <tokens per block>"
                    + " <chunk tokens> <prompt tokens file> <new tokens>");
            System.exit(2);
        }
        Path dir = Path.of(args[0]);
        int chunkTokens = Integer.parseInt(args[4]);
        int[] prompt = readTokens(Path.of(args[5]));
        int newTokens = Integer.parseInt(args[6]);
        AbstractModel model = load(dir);
        try (JlamaEngine alone = JlamaEngine.alone(model, prompt.length + newTokens)) {
            // KV computed before the JIT compiled Jlama's vector kernels differs from a warm process's in the last
            // bits (the Vector API's reductions change order): a warm exporter offers what a warm importer computes.
            for (int i = 0; i < WARM_UP_RUNS; i++) {
                alone.generate(prompt, newTokens);
            }
        }
        try (JlamaEngine engine = JlamaEngine.withMarketplace(model,
                JlamaKv.namespace(model, dir, args[1], args[2], Integer.parseInt(args[3])),
                prompt.length + newTokens, b -> b.chunkTokens(chunkTokens))) {
            engine.generate(prompt, newTokens);
            System.out.println(READY + engine.marketplace().metrics().snapshot().chunksExported());
            System.out.flush();
            while (System.in.read() >= 0) {
                // offer until the parent lets go
            }
        } finally {
            model.close();
        }
    }
}
