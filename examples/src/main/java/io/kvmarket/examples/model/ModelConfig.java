package io.kvmarket.examples.model;

import io.kvmarket.kv.DType;
import io.kvmarket.kv.KvLayout;
import io.kvmarket.kv.LayoutOrder;

/**
 * Shape of the Llama-style example model: pre-norm decoder blocks with RMSNorm, RoPE, grouped-query attention and
 * a SwiGLU MLP, a separate LM head. KV is fp32 in blocks of {@link #TOKENS_PER_BLOCK} tokens, layer-major.
 *
 * @param name         short name ({@code demo}, {@code tiny}), as the server's {@code --model} flag takes it
 * @param dim          residual stream width
 * @param layers       decoder blocks
 * @param heads        query heads
 * @param kvHeads      key/value heads; every {@code heads / kvHeads} query heads share one
 * @param headDim      elements per head (even, for RoPE pairs)
 * @param hidden       SwiGLU hidden width
 * @param vocab        vocabulary size
 * @param maxPositions longest sequence (prompt and generated tokens) the model and its KV cache hold
 */
public record ModelConfig(String name, int dim, int layers, int heads, int kvHeads, int headDim, int hidden,
                          int vocab, int maxPositions) {

    public static final int TOKENS_PER_BLOCK = 16;
    static final float ROPE_THETA = 10_000f;
    static final float NORM_EPS = 1e-5f;

    public ModelConfig {
        if (dim <= 0 || layers <= 0 || heads <= 0 || kvHeads <= 0 || headDim <= 0 || hidden <= 0 || vocab <= 0) {
            throw new IllegalArgumentException("every size must be positive: " + name + " " + dim + "/" + layers + "/"
                    + heads + "/" + kvHeads + "/" + headDim + "/" + hidden + "/" + vocab);
        }
        if (heads % kvHeads != 0) {
            throw new IllegalArgumentException("heads " + heads + " is not a multiple of kvHeads " + kvHeads);
        }
        if (headDim % 2 != 0) {
            throw new IllegalArgumentException("headDim must be even for RoPE, was " + headDim);
        }
        if (maxPositions <= 0 || maxPositions % TOKENS_PER_BLOCK != 0) {
            throw new IllegalArgumentException("maxPositions must be a positive multiple of " + TOKENS_PER_BLOCK
                    + ", was " + maxPositions);
        }
    }

    /**
     * The demo model, 11.3 M parameters: the demo's 5,800-token prefill takes 7.5 to 9 s on two cores. Width 512
     * rather than less keeps the cost of a token that attends to a few thousand others within about 1.5 times
     * that of an average prompt token, as in real models, where the weights, not attention, dominate.
     */
    public static ModelConfig demo() {
        return new ModelConfig("demo", 512, 4, 8, 2, 64, 1376, ByteTokenizer.VOCAB, 8192);
    }

    /** A model small enough for unit tests to prefill hundreds of tokens in milliseconds. */
    public static ModelConfig tiny() {
        return new ModelConfig("tiny", 32, 2, 4, 2, 8, 88, ByteTokenizer.VOCAB, 1024);
    }

    /** The configuration called {@code demo} or {@code tiny}. */
    public static ModelConfig named(String name) {
        return switch (name) {
            case "demo" -> demo();
            case "tiny" -> tiny();
            default -> throw new IllegalArgumentException("unknown model " + name + "; known: demo, tiny");
        };
    }

    public int qDim() {
        return heads * headDim;
    }

    public int kvDim() {
        return kvHeads * headDim;
    }

    /** KV blocks that hold one sequence of {@link #maxPositions} tokens. */
    public int maxBlocks() {
        return maxPositions / TOKENS_PER_BLOCK;
    }

    public KvLayout kvLayout() {
        return KvLayout.of(layers, kvHeads, headDim, DType.FLOAT32, TOKENS_PER_BLOCK, LayoutOrder.LAYER_MAJOR);
    }
}
