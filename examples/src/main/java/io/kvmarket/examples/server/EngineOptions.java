package io.kvmarket.examples.server;

import io.kvmarket.examples.model.ModelConfig;

import java.nio.file.Path;

/**
 * How an {@link InferenceEngine} is set up.
 *
 * @param model       model shape
 * @param seed        weights seed; engines share KV only when model and seed match
 * @param nodeDir     node directory holding the host device memory and the node-local registry
 * @param marketplace whether to import and export KV through the marketplace
 * @param chunkTokens marketplace chunk size in tokens, a multiple of {@link ModelConfig#TOKENS_PER_BLOCK}
 * @param threads     threads of the forward pass
 */
public record EngineOptions(ModelConfig model, long seed, Path nodeDir, boolean marketplace, int chunkTokens,
                            int threads) {

    public EngineOptions {
        if (model == null || nodeDir == null) {
            throw new IllegalArgumentException("model and nodeDir are required");
        }
        if (chunkTokens <= 0 || chunkTokens % ModelConfig.TOKENS_PER_BLOCK != 0) {
            throw new IllegalArgumentException("chunkTokens must be a positive multiple of "
                    + ModelConfig.TOKENS_PER_BLOCK + ", was " + chunkTokens);
        }
        if (threads <= 0) {
            throw new IllegalArgumentException("threads must be positive, was " + threads);
        }
    }
}
