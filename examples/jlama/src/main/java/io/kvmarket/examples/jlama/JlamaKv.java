package io.kvmarket.examples.jlama;

import com.github.tjake.jlama.model.AbstractModel;
import com.github.tjake.jlama.safetensors.Config;
import com.github.tjake.jlama.tensor.AbstractTensor;
import com.github.tjake.jlama.tensor.KvBufferCache;
import io.kvmarket.kv.DType;
import io.kvmarket.kv.KvLayout;
import io.kvmarket.kv.LayoutOrder;
import io.kvmarket.kv.PagedKvCache;

import java.lang.foreign.MemorySegment;

/**
 * Copies KV between a Jlama session's buffer and blocks of a {@link PagedKvCache} of the same geometry: region
 * {@code 2 x layer + (0 for K, 1 for V)} of a block holds its positions' rows of that layer's K or V, as Jlama keeps
 * them (after RoPE, {@code KV heads x head dim} values per position, in Jlama's working dtype). One bulk copy per run
 * of positions that lie back to back in both: split where a block ends or where Jlama's page does.
 *
 * <p>What Jlama's public API forces: its pages are its own memory (mapped files or heap), so KV crosses between them
 * and the marketplace's memory through the host, a copy each way; a {@code KvBufferCache} that took its pages from
 * a caller's memory would remove it. And the page size is not public: it is read off the page tensors' shape.
 */
public final class JlamaKv {

    private JlamaKv() {
    }

    /** The KV layout of {@code model}'s buffers in blocks of {@code tokensPerBlock} positions. */
    public static KvLayout layout(AbstractModel model, int tokensPerBlock) {
        Config c = model.getConfig();
        DType dtype = switch (model.getWorkingDType()) {
            case F32 -> DType.FLOAT32;
            case BF16 -> DType.BFLOAT16;
            default -> throw new IllegalArgumentException("KV in " + model.getWorkingDType() + " is not supported");
        };
        return KvLayout.of(c.numberOfLayers, c.numberOfKeyValueHeads, c.headSize, dtype, tokensPerBlock,
                LayoutOrder.LAYER_MAJOR);
    }

    /** Copies positions {@code [0, tokens)} of {@code kv} into {@code blocks} of the cache, whose memory is given. */
    public static void toCache(AbstractModel model, KvBufferCache.KvBuffer kv, int tokens, PagedKvCache cache,
                               MemorySegment cacheMemory, int[] blocks) {
        copy(model, kv, tokens, cache, cacheMemory, blocks, true);
    }

    /** Copies {@code blocks} of the cache into positions {@code [0, tokens)} of {@code kv}. */
    public static void fromCache(AbstractModel model, PagedKvCache cache, MemorySegment cacheMemory, int[] blocks,
                                 int tokens, KvBufferCache.KvBuffer kv) {
        copy(model, kv, tokens, cache, cacheMemory, blocks, false);
    }

    private static void copy(AbstractModel model, KvBufferCache.KvBuffer kv, int tokens, PagedKvCache cache,
                             MemorySegment cacheMemory, int[] blocks, boolean toCache) {
        KvLayout layout = cache.layout();
        if (!layout.equals(layout(model, layout.tokensPerBlock()))) {
            throw new IllegalArgumentException("cache layout " + layout + " is not the model's "
                    + layout(model, layout.tokensPerBlock()));
        }
        int perBlock = layout.tokensPerBlock();
        if (tokens < 0 || blocks.length < (tokens + perBlock - 1) / perBlock) {
            throw new IllegalArgumentException(blocks.length + " blocks cannot hold " + tokens + " tokens");
        }
        long row = (long) layout.kvHeads() * layout.headDim() * layout.dtype().bytes();
        for (int l = 0; l < layout.layers(); l++) {
            for (int k = 0; k < 2; k++) {
                // Jlama 0.8.4 names a page made by *UptoPosition after its last page (two pages then share one file):
                // touching each position first makes every page under its own name.
                for (int p = 0; p < tokens; p++) {
                    if (k == 0) {
                        kv.getKeyTensorForPosition(l, p);
                    } else {
                        kv.getValTensorForPosition(l, p);
                    }
                }
                AbstractTensor<?, ?>[] pages = tokens == 0 ? new AbstractTensor<?, ?>[0]
                        : k == 0 ? kv.getKeyTensorsUptoPosition(l, tokens - 1)
                        : kv.getValTensorsUptoPosition(l, tokens - 1);
                int perPage = pages.length == 0 ? 1 : pages[0].shape().first();
                for (int p = 0; p < tokens; ) {
                    int run = Math.min(Math.min(tokens - p, perBlock - p % perBlock), perPage - p % perPage);
                    MemorySegment page = pages[p / perPage].getMemorySegment()
                            .asSlice((long) (p % perPage) * row, run * row);
                    long at = cache.regionOffset(blocks[p / perBlock], 2 * l + k) + (long) (p % perBlock) * row;
                    if (toCache) {
                        MemorySegment.copy(page, 0, cacheMemory, at, run * row);
                    } else {
                        MemorySegment.copy(cacheMemory, at, page, 0, run * row);
                    }
                    p += run;
                }
            }
        }
    }
}
