package io.kvmarket.examples.jlama;

import com.github.tjake.jlama.model.AbstractModel;
import io.kvmarket.testkit.ChildJvm;
import io.kvmarket.testkit.ScratchDir;

import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.Random;

/**
 * Time to the first token's logits in Jlama for a prompt of a {@value #PREFIX}-token shared prefix and
 * {@value #SUFFIX} new tokens, whose prefix another Jlama process on the node computed and exported: importing the
 * prefix and prefilling the new tokens, against a full prefill in this same run. Each round has a new suffix, so
 * every import comes from the other process (this one's exports of the prefix find it offered already). Prints
 * one line: mean +- standard deviation and median of each (and of the import's share: match, load and the copy into
 * Jlama's pages), their ratio, and how the first token's logits of both paths compare (largest difference, same
 * greedy token).
 *
 * <p>Arguments (optional): rounds, or layers hidden heads kvHeads intermediate rounds. The default model is a
 * random-weight Llama in float32 with grouped-query attention (8 layers, hidden size 384, 6 heads, 2 KV heads).
 */
public final class JlamaPrefillSkip {

    static final int PREFIX = 2048;
    static final int SUFFIX = 64;
    static final int CHUNK_TOKENS = 256;
    static final int TOKENS_PER_BLOCK = 16;
    private static final int WARM_UP_ROUNDS = 3;
    private static final long SEED = 11;

    private JlamaPrefillSkip() {
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 0 && args.length != 1 && args.length != 6) {
            System.err.println("usage: JlamaPrefillSkip [rounds | layers hidden heads kvHeads intermediate rounds]");
            System.exit(2);
        }
        RandomLlama.Shape shape = args.length == 6
                ? new RandomLlama.Shape(Integer.parseInt(args[0]), Integer.parseInt(args[1]),
                Integer.parseInt(args[2]), Integer.parseInt(args[3]), Integer.parseInt(args[4]), 4096)
                : new RandomLlama.Shape(8, 384, 6, 2, 1024, 4096);
        int rounds = args.length == 0 ? 8 : Integer.parseInt(args[args.length - 1]);
        if (rounds < 1) {
            throw new IllegalArgumentException("rounds must be positive, was " + rounds);
        }
        Path dir = ScratchDir.create("kvmarket-jlama-bench-");
        try {
            run(dir, shape, rounds);
        } finally {
            ScratchDir.delete(dir);
        }
    }

    private static void run(Path dir, RandomLlama.Shape shape, int rounds) throws Exception {
        // This process and the exporter share a node directory of their own.
        System.setProperty("kvmarket.dir", dir.resolve("node").toString());
        Path modelDir = dir.resolve("model");
        RandomLlama.write(modelDir, shape, SEED);
        Random random = new Random(SEED);
        int[] prefix = new int[PREFIX];
        prefix[0] = 1; // BOS
        for (int i = 1; i < PREFIX; i++) {
            prefix[i] = 3 + random.nextInt(RandomLlama.VOCAB - 3);
        }
        Path prefixFile = dir.resolve("prefix.tokens");
        JlamaExporter.writeTokens(prefixFile, prefix);
        String revision = "random seed " + SEED + " " + shape;

        try (ChildJvm exporter = ChildJvm.start(JlamaExporter.class, List.of("--add-modules=jdk.incubator.vector"),
                modelDir.toString(), "random-llama", revision, String.valueOf(TOKENS_PER_BLOCK),
                String.valueOf(CHUNK_TOKENS), prefixFile.toString(), "1")) {
            String ready = exporter.awaitLine(JlamaExporter.READY, Duration.ofMinutes(10));
            if (Integer.parseInt(ready.substring(JlamaExporter.READY.length()).strip()) != PREFIX / CHUNK_TOKENS) {
                throw new IllegalStateException("the exporter did not publish the whole prefix: " + ready);
            }
            AbstractModel model = JlamaExporter.load(modelDir);
            try (JlamaEngine alone = JlamaEngine.alone(model, PREFIX + SUFFIX + 1);
                 JlamaEngine market = JlamaEngine.withMarketplace(model,
                         JlamaKv.namespace(model, modelDir, "random-llama", revision, TOKENS_PER_BLOCK),
                         PREFIX + SUFFIX + 1, b -> b.chunkTokens(CHUNK_TOKENS))) {
                double[] importMs = new double[rounds];
                double[] copyInMs = new double[rounds];
                double[] fullMs = new double[rounds];
                float largest = 0;
                boolean sameGreedy = true;
                String transports = "";
                for (int r = -WARM_UP_ROUNDS; r < rounds; r++) {
                    int[] prompt = Arrays.copyOf(prefix, PREFIX + SUFFIX);
                    for (int i = PREFIX; i < prompt.length; i++) {
                        prompt[i] = 3 + random.nextInt(RandomLlama.VOCAB - 3);
                    }
                    JlamaEngine.Generation full = alone.generate(prompt, 1);
                    JlamaEngine.Generation imported = market.generate(prompt, 1);
                    if (imported.tokensImported() != PREFIX) {
                        throw new IllegalStateException("imported " + imported.tokensImported() + " of the prefix: "
                                + imported.importNote());
                    }
                    if (r < 0) {
                        continue;
                    }
                    transports = imported.importNote();
                    importMs[r] = imported.firstTokenNanos() / 1e6;
                    copyInMs[r] = imported.importNanos() / 1e6;
                    fullMs[r] = full.firstTokenNanos() / 1e6;
                    sameGreedy &= full.tokens()[0] == imported.tokens()[0];
                    for (int i = 0; i < full.firstLogits().length; i++) {
                        largest = Math.max(largest, Math.abs(full.firstLogits()[i] - imported.firstLogits()[i]));
                    }
                }
                System.out.printf("jlama_prefill_skip: model=%s parameters=%d prefix_tokens=%d suffix_tokens=%d"
                                + " rounds=%d import_then_prefill_ms=%s of_which_import_ms=%s"
                                + " baseline_full_prefill_ms=%s ratio=%.3f median_ratio=%.3f"
                                + " largest_logit_difference=%s same_greedy_token=%b import=\"%s\"%n",
                        shape, shape.parameters(), PREFIX, SUFFIX, rounds, meanSd(importMs), meanSd(copyInMs),
                        meanSd(fullMs),
                        mean(importMs) / mean(fullMs), median(importMs) / median(fullMs), largest, sameGreedy,
                        transports);
            } finally {
                model.close();
            }
            exporter.stop(Duration.ofSeconds(30));
        }
    }

    private static double mean(double[] v) {
        return Arrays.stream(v).average().orElse(Double.NaN);
    }

    private static double median(double[] v) {
        double[] s = v.clone();
        Arrays.sort(s);
        return s.length % 2 == 1 ? s[s.length / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
    }

    private static String meanSd(double[] v) {
        double m = mean(v);
        double sd = Math.sqrt(Arrays.stream(v).map(x -> (x - m) * (x - m)).sum() / Math.max(1, v.length - 1));
        return String.format("%.1f+-%.1f(median %.1f)", m, sd, median(v));
    }
}
