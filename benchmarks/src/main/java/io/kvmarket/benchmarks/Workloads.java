package io.kvmarket.benchmarks;

import io.kvmarket.kv.DType;
import io.kvmarket.kv.KvLayout;
import io.kvmarket.kv.LayoutOrder;
import io.kvmarket.key.Namespace;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

/**
 * The inputs every benchmark shares, so each process of a run (JMH fork, exporter child) builds byte-identical
 * prompts and namespaces: a Llama-3-8B-like KV layout (32 layers x 8 KV heads x head dim 128, BF16, blocks of
 * 16 tokens, vLLM-style layer-major pools: 128 KiB of KV per token) and deterministic pseudo-random prompts.
 */
final class Workloads {

    /** Tokens of the prompt hashed and looked up: 32 chunks of 256. */
    static final int PROMPT_TOKENS = 8192;
    static final int CHUNK_TOKENS = 256;
    static final int TOKENS_PER_BLOCK = 16;
    static final KvLayout LAYOUT = KvLayout.of(32, 8, 128, DType.BFLOAT16, TOKENS_PER_BLOCK, LayoutOrder.LAYER_MAJOR);
    static final Namespace NAMESPACE = Namespace.of("meta-llama/Llama-3.1-8B", "bench-rev-1", "llama3-tokenizer", LAYOUT);
    static final String REPORT_PROPERTY = "kvmarket.bench.report";

    private static final int VOCABULARY = 128_256;

    private Workloads() {
    }

    /** A prompt of {@code count} token ids in [0, vocabulary), the same for the same seed in every process. */
    static int[] tokens(int count, long seed) {
        int[] tokens = new int[count];
        long state = seed;
        for (int i = 0; i < count; i++) {
            state = mix(state + i);
            tokens[i] = (int) Long.remainderUnsigned(state, VOCABULARY);
        }
        return tokens;
    }

    /** SplitMix64 finalizer: a cheap, well-spread function of its argument. */
    static long mix(long z) {
        z = (z ^ (z >>> 30)) * 0xbf58476d1ce4e5b9L;
        z = (z ^ (z >>> 27)) * 0x94d049bb133111ebL;
        return z ^ (z >>> 31);
    }

    /**
     * A {@code key=value} fact a benchmark fork checked (bytes exact, logits identical): appended to the file the
     * {@value #REPORT_PROPERTY} property names, for {@link BenchmarkMain}; printed when run outside it.
     */
    static void report(String keyValue) throws IOException {
        String report = System.getProperty(REPORT_PROPERTY);
        if (report == null) {
            System.out.println(keyValue);
        } else {
            Files.writeString(Path.of(report), keyValue + System.lineSeparator(), StandardCharsets.UTF_8,
                    StandardOpenOption.CREATE, StandardOpenOption.APPEND);
        }
    }
}
