package io.kvmarket.kv;

import io.kvmarket.kv.LayoutOrder;

/**
 * How an engine lays its paged KV cache out in device memory.
 *
 * <p>A <em>region</em> is the K or the V of one layer for one block: {@code tokensPerBlock x kvHeads x headDim}
 * elements, contiguous. Region {@code r = 2 * layer + (0 for K, 1 for V)}.
 */
public enum LayoutOrder {
    /** vLLM style: one block pool per layer and K/V; region r of block b lives at {@code (r * numBlocks + b) * regionBytes}. */
    LAYER_MAJOR,
    /** All regions of one block are contiguous: region r of block b lives at {@code (b * regions + r) * regionBytes}. */
    BLOCK_MAJOR
}
