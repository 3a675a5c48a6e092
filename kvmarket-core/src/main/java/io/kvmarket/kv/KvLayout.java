package io.kvmarket.kv;

import io.kvmarket.kv.KvLayout;
import io.kvmarket.kv.DType;
import io.kvmarket.kv.LayoutOrder;

/**
 * Shape of an engine's KV cache: everything about the bytes that must match before KV can be shared.
 *
 * @param layers         transformer layers
 * @param kvHeads        KV heads held by this tensor-parallel rank
 * @param headDim        elements per head
 * @param dtype          element type
 * @param tokensPerBlock tokens in one engine block (page)
 * @param order          memory order of the engine's block pools
 * @param tpRank         tensor-parallel rank of this shard
 * @param tpSize         tensor-parallel world size
 */
public record KvLayout(int layers, int kvHeads, int headDim, DType dtype, int tokensPerBlock, LayoutOrder order,
                       int tpRank, int tpSize) {

    public KvLayout {
        positive("layers", layers);
        positive("kvHeads", kvHeads);
        positive("headDim", headDim);
        positive("tokensPerBlock", tokensPerBlock);
        positive("tpSize", tpSize);
        if (dtype == null || order == null) {
            throw new IllegalArgumentException("dtype and order are required");
        }
        if (tpRank < 0 || tpRank >= tpSize) {
            throw new IllegalArgumentException("tpRank " + tpRank + " outside [0, " + tpSize + ")");
        }
        if ((long) tokensPerBlock * kvHeads * headDim * dtype.bytes() > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("one K or V region of a block exceeds 2 GiB");
        }
    }

    /** A single-rank layout, the common case. */
    public static KvLayout of(int layers, int kvHeads, int headDim, DType dtype, int tokensPerBlock, LayoutOrder order) {
        return new KvLayout(layers, kvHeads, headDim, dtype, tokensPerBlock, order, 0, 1);
    }

    /** Regions per block: K and V of every layer. */
    public int regionsPerBlock() {
        return 2 * layers;
    }

    /** Bytes of one region (K or V of one layer for one block). */
    public long regionBytes() {
        return (long) tokensPerBlock * kvHeads * headDim * dtype.bytes();
    }

    /** Bytes of KV one token occupies across all layers. */
    public long bytesPerToken() {
        return 2L * layers * kvHeads * headDim * dtype.bytes();
    }

    /** Bytes of one block across all layers. */
    public long blockBytes() {
        return regionBytes() * regionsPerBlock();
    }

    private static void positive(String name, int value) {
        if (value <= 0) {
            throw new IllegalArgumentException(name + " must be positive, was " + value);
        }
    }
}
