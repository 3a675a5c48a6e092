package io.kvmarket.benchmarks.gpu;

import io.kvmarket.KvMarketplace;
import io.kvmarket.nvlink.CudaBuffer;
import io.kvmarket.device.Device;
import io.kvmarket.kv.DType;
import io.kvmarket.kv.KvLayout;
import io.kvmarket.kv.LayoutOrder;
import io.kvmarket.key.Namespace;
import io.kvmarket.kv.PagedKvCache;
import io.kvmarket.registry.OfferRegistry;
import org.bytedeco.javacpp.BytePointer;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

import static org.bytedeco.cuda.global.cudart.cudaDeviceSynchronize;
import static org.bytedeco.cuda.global.cudart.cudaGetErrorString;
import static org.bytedeco.cuda.global.cudart.cudaMemcpy;
import static org.bytedeco.cuda.global.cudart.cudaMemcpyDeviceToHost;
import static org.bytedeco.cuda.global.cudart.cudaMemcpyHostToDevice;
import static org.bytedeco.cuda.global.cudart.cudaSuccess;

/**
 * The GPU benchmark's KV: Llama-3-8B geometry (32 layers, 8 KV heads, head dim 128, bf16, 16-token blocks,
 * vLLM-style per-layer K and V block pools), 8,192 prompt tokens = 512 blocks = 1 GiB, in 256-token chunks.
 */
final class GpuKvGeometry {

    static final KvLayout LAYOUT = KvLayout.of(32, 8, 128, DType.BFLOAT16, 16, LayoutOrder.LAYER_MAJOR);
    static final Namespace NAMESPACE = Namespace.of("meta-llama/Meta-Llama-3-8B", "random-bf16", "llama3", LAYOUT);
    static final int TOKENS = 8192;
    static final int CHUNK_TOKENS = 256;
    static final int PROMPT_BLOCKS = TOKENS / 16;
    /** The importer's cache holds twice the prompt, so scattered blocks really scatter. */
    static final int CACHE_BLOCKS = 2 * PROMPT_BLOCKS;
    static final long KV_BYTES = LAYOUT.blockBytes() * PROMPT_BLOCKS;

    private GpuKvGeometry() {
    }

    static PagedKvCache cache(Device device, int blocks) {
        return new PagedKvCache(device.allocate(PagedKvCache.requiredBytes(LAYOUT, blocks)), LAYOUT, blocks);
    }

    static KvMarketplace marketplace(Device device, OfferRegistry registry, PagedKvCache cache, long poolBytes) {
        return KvMarketplace.builder().namespace(NAMESPACE).kvCache(cache).device(device).registry(registry)
                .chunkTokens(CHUNK_TOKENS).poolBytes(poolBytes).build();
    }

    static int[] prompt() {
        int[] t = new int[TOKENS];
        for (int i = 0; i < TOKENS; i++) {
            t[i] = (int) ((i * 2654435761L) % 128_000);
        }
        return t;
    }

    /** The bytes of region r of logical block b: 8-byte words derived from (b, r, word). */
    static ByteBuffer pattern(int block, int region) {
        ByteBuffer p = ByteBuffer.allocate((int) LAYOUT.regionBytes()).order(ByteOrder.LITTLE_ENDIAN);
        for (int w = 0; w < p.capacity() / 8; w++) {
            long x = ((long) block << 40) ^ ((long) region << 24) ^ w;
            x *= 0x9e3779b97f4a7c15L;
            p.putLong(w * 8, x ^ (x >>> 29));
        }
        return p;
    }

    /** Uploads the pattern of logical blocks [0, PROMPT_BLOCKS) into {@code table}'s blocks. */
    static void fill(PagedKvCache cache, int[] table) {
        CudaBuffer b = (CudaBuffer) cache.buffer();
        for (int blk = 0; blk < PROMPT_BLOCKS; blk++) {
            for (int r = 0; r < LAYOUT.regionsPerBlock(); r++) {
                BytePointer host = new BytePointer(pattern(blk, r));
                check(cudaMemcpy(b.at(cache.regionOffset(table[blk], r)), host, LAYOUT.regionBytes(),
                        cudaMemcpyHostToDevice), "cudaMemcpy");
            }
        }
        // From pageable memory cudaMemcpy returns before the DMA lands; the export's copy stream must see it all.
        check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    }

    /** True when {@code table}'s blocks hold the pattern of logical blocks [0, PROMPT_BLOCKS). */
    static boolean holds(PagedKvCache cache, int[] table) {
        CudaBuffer b = (CudaBuffer) cache.buffer();
        BytePointer host = new BytePointer(LAYOUT.regionBytes());
        byte[] got = new byte[(int) LAYOUT.regionBytes()];
        for (int blk = 0; blk < PROMPT_BLOCKS; blk++) {
            for (int r = 0; r < LAYOUT.regionsPerBlock(); r++) {
                check(cudaMemcpy(host, b.at(cache.regionOffset(table[blk], r)), LAYOUT.regionBytes(),
                        cudaMemcpyDeviceToHost), "cudaMemcpy");
                host.get(got);
                if (!ByteBuffer.wrap(got).equals(pattern(blk, r).rewind())) {
                    return false;
                }
            }
        }
        return true;
    }

    static void check(int err, String call) {
        if (err != cudaSuccess) {
            throw new IllegalStateException(call + " failed: " + cudaGetErrorString(err).getString());
        }
    }
}
