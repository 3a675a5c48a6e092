package io.kvmarket.nvlink;

import io.kvmarket.KvMarketplace;
import io.kvmarket.kv.DType;
import io.kvmarket.kv.KvLayout;
import io.kvmarket.kv.LayoutOrder;
import io.kvmarket.key.Namespace;
import io.kvmarket.kv.PagedKvCache;
import io.kvmarket.registry.OfferRegistry;
import org.bytedeco.javacpp.BytePointer;

import static org.bytedeco.cuda.global.cudart.cudaDeviceSynchronize;
import static org.bytedeco.cuda.global.cudart.cudaMemcpy;
import static org.bytedeco.cuda.global.cudart.cudaMemcpyDeviceToHost;
import static org.bytedeco.cuda.global.cudart.cudaMemcpyHostToDevice;
import static org.bytedeco.cuda.global.cudart.cudaSuccess;

/** A GPU engine for tests: a CUDA device, a paged KV cache on it, a marketplace, and host access for checks. */
final class GpuKv implements AutoCloseable {

    static final KvLayout LAYOUT = KvLayout.of(2, 2, 64, DType.BFLOAT16, 16, LayoutOrder.LAYER_MAJOR);
    static final Namespace NS = Namespace.of("gpu-test-model", "rev1", "ids", LAYOUT);
    static final int CHUNK = 32;
    static final int BLOCKS = 64;

    final CudaDevice device;
    final PagedKvCache cache;
    final KvMarketplace market;

    GpuKv(OfferRegistry registry, int poolChunks) {
        device = new CudaDevice(0);
        cache = new PagedKvCache(device.allocate(PagedKvCache.requiredBytes(LAYOUT, BLOCKS)), LAYOUT, BLOCKS);
        long chunkBytes = LAYOUT.blockBytes() * (CHUNK / LAYOUT.tokensPerBlock());
        market = KvMarketplace.builder().namespace(NS).kvCache(cache).device(device).registry(registry)
                .chunkTokens(CHUNK).poolBytes(poolChunks * chunkBytes).build();
    }

    /**
     * From pageable memory cudaMemcpy returns before the DMA lands, and the device's non-blocking copy stream does
     * not wait for it: the upload is complete only after the device synchronizes.
     */
    static void upload(CudaBuffer b, long offset, byte[] bytes) {
        stage(b, offset, bytes);
        check(cudaDeviceSynchronize());
    }

    private static void stage(CudaBuffer b, long offset, byte[] bytes) {
        check(cudaMemcpy(b.at(offset), new BytePointer(bytes), bytes.length, cudaMemcpyHostToDevice));
    }

    static byte[] download(CudaBuffer b, long offset, int length) {
        BytePointer host = new BytePointer(length);
        check(cudaMemcpy(host, b.at(offset), length, cudaMemcpyDeviceToHost));
        byte[] out = new byte[length];
        host.get(out);
        return out;
    }

    /** Writes KV for logical blocks [0, count) of a request as a function of (salt, block, region, byte). */
    void fill(int[] blocks, int count, int salt) {
        for (int i = 0; i < count; i++) {
            for (int r = 0; r < LAYOUT.regionsPerBlock(); r++) {
                stage((CudaBuffer) cache.buffer(), cache.regionOffset(blocks[i], r), pattern(salt, i, r));
            }
        }
        check(cudaDeviceSynchronize());
    }

    static byte[] pattern(int salt, int block, int region) {
        byte[] p = new byte[(int) LAYOUT.regionBytes()];
        for (int b = 0; b < p.length; b++) {
            p[b] = (byte) (salt * 131 + block * 31 + region * 7 + b);
        }
        return p;
    }

    /** True when logical blocks [0, count) hold the pattern of {@code salt}. */
    boolean holds(int[] blocks, int count, int salt) {
        for (int i = 0; i < count; i++) {
            for (int r = 0; r < LAYOUT.regionsPerBlock(); r++) {
                byte[] got = download((CudaBuffer) cache.buffer(), cache.regionOffset(blocks[i], r),
                        (int) LAYOUT.regionBytes());
                if (!java.util.Arrays.equals(pattern(salt, i, r), got)) {
                    return false;
                }
            }
        }
        return true;
    }

    static int[] tokens(int n, int salt) {
        int[] t = new int[n];
        for (int i = 0; i < n; i++) {
            t[i] = salt * 1000 + i;
        }
        return t;
    }

    static int[] scattered(int n, int seed) {
        java.util.List<Integer> all = new java.util.ArrayList<>();
        for (int i = 0; i < BLOCKS; i++) {
            all.add(i);
        }
        java.util.Collections.shuffle(all, new java.util.Random(seed));
        return all.subList(0, n).stream().mapToInt(Integer::intValue).toArray();
    }

    private static void check(int err) {
        if (err != cudaSuccess) {
            throw new IllegalStateException("cudaMemcpy failed: " + CudaRuntime.errorString(err));
        }
    }

    @Override
    public void close() {
        market.close();
        device.close();
    }
}
