package io.kvmarket.examples.model;

import io.kvmarket.device.host.HostBuffer;
import io.kvmarket.kv.DType;
import io.kvmarket.kv.PagedKvCache;

import java.nio.ByteOrder;
import java.nio.FloatBuffer;

/**
 * The engine's K and V, stored exactly in the {@link PagedKvCache} layout that the marketplace copies byte for
 * byte: region {@code 2 * layer} of a block holds K, region {@code 2 * layer + 1} holds V, each
 * {@code [tokenInBlock][kvHead][dim]} fp32 little-endian. Any other placement would make imported KV land in the
 * wrong place. The memory is host device memory, shared with the device's copy thread, so every access is
 * absolute. Safe for concurrent writers of different tokens.
 */
public final class PagedKvStore {

    private final PagedKvCache cache;
    private final FloatBuffer floats;
    private final int tokensPerBlock;
    private final int kvHeads;
    private final int headDim;
    private final int kvDim;

    public PagedKvStore(PagedKvCache cache) {
        if (!(cache.buffer() instanceof HostBuffer memory)) {
            throw new IllegalArgumentException("the Java transformer computes on the host and needs host device memory, got "
                    + cache.buffer());
        }
        if (cache.layout().dtype() != DType.FLOAT32) {
            throw new IllegalArgumentException("the Java transformer stores fp32 KV, layout says " + cache.layout().dtype());
        }
        this.cache = cache;
        // duplicate() starts big-endian; the cache is little-endian like the device memory it stands for.
        this.floats = memory.memory().duplicate().clear().order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer();
        this.tokensPerBlock = cache.layout().tokensPerBlock();
        this.kvHeads = cache.layout().kvHeads();
        this.headDim = cache.layout().headDim();
        this.kvDim = kvHeads * headDim;
    }

    public PagedKvCache cache() {
        return cache;
    }

    /** Stores K ({@code src[kOff..kOff+kvDim)}) and V ({@code src[vOff..vOff+kvDim)}) of the token at {@code pos}. */
    void write(int[] blockTable, int layer, int pos, float[] src, int kOff, int vOff) {
        int block = blockTable[pos / tokensPerBlock];
        int row = (pos % tokensPerBlock) * kvDim;
        floats.put(regionIndex(block, 2 * layer) + row, src, kOff, kvDim);
        floats.put(regionIndex(block, 2 * layer + 1) + row, src, vOff, kvDim);
    }

    /**
     * Reads the K and V of positions {@code [0, count)} of one layer: K transposed, {@code keysT[kvHead * headDim
     * + dim][pos]}, so attention scores vectorize over positions; V as rows, {@code values[kvHead * count + pos]}.
     */
    void gather(int[] blockTable, int layer, int count, float[][] keysT, float[][] values) {
        float[] region = new float[tokensPerBlock * kvDim];
        for (int start = 0; start < count; start += tokensPerBlock) {
            int block = blockTable[start / tokensPerBlock];
            int tokens = Math.min(tokensPerBlock, count - start);
            floats.get(regionIndex(block, 2 * layer), region, 0, tokens * kvDim);
            for (int t = 0; t < tokens; t++) {
                for (int i = 0; i < kvDim; i++) {
                    keysT[i][start + t] = region[t * kvDim + i];
                }
            }
            floats.get(regionIndex(block, 2 * layer + 1), region, 0, tokens * kvDim);
            for (int t = 0; t < tokens; t++) {
                for (int g = 0; g < kvHeads; g++) {
                    System.arraycopy(region, t * kvDim + g * headDim, values[g * count + start + t], 0, headDim);
                }
            }
        }
    }

    private int regionIndex(int block, int region) {
        return (int) (cache.regionOffset(block, region) / Float.BYTES);
    }
}
