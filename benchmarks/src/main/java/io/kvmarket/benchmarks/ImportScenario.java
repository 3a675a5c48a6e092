package io.kvmarket.benchmarks;

import io.kvmarket.KvMarketplace;
import io.kvmarket.device.host.HostBuffer;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.kv.PagedKvCache;
import io.kvmarket.registry.OfferRegistry;

import java.nio.ByteBuffer;

/**
 * The cross-process import both sides agree on: 2,048 tokens of Llama-3-8B-like KV (128 KiB per token, 256 MiB),
 * 128 blocks of 16 tokens, 8 chunks of 256 tokens (32 MiB each), and a byte pattern that is a function of the
 * logical block (token position), the region (layer, K or V) and the word inside the region. The exporter writes
 * the pattern with logical block b in engine block b; the importer checks it wherever its block table put b.
 */
final class ImportScenario {

    static final int TOKENS = 2048;
    static final int BLOCKS = TOKENS / Workloads.TOKENS_PER_BLOCK;
    static final long KV_BYTES = TOKENS * Workloads.LAYOUT.bytesPerToken();
    static final long CHUNK_BYTES = Workloads.CHUNK_TOKENS * Workloads.LAYOUT.bytesPerToken();
    /** The exporter's pool holds every chunk with one to spare, so exporting never evicts. */
    static final long EXPORTER_POOL_BYTES = KV_BYTES + CHUNK_BYTES;
    static final int REGISTRY_CAPACITY = 1 << 12;
    static final long PROMPT_SEED = 3;
    static final String READY = "READY";

    private static final long PATTERN_SEED = 0x6b766d61726b6574L;

    private ImportScenario() {
    }

    static int[] prompt() {
        return Workloads.tokens(TOKENS, PROMPT_SEED);
    }

    /** A KV cache of {@link #BLOCKS} blocks on the host device, zeroed. */
    static PagedKvCache allocateCache(HostDevice device) {
        return new PagedKvCache(device.allocate(PagedKvCache.requiredBytes(Workloads.LAYOUT, BLOCKS)), Workloads.LAYOUT,
                BLOCKS);
    }

    static KvMarketplace marketplace(HostDevice device, OfferRegistry registry, PagedKvCache cache, long poolBytes) {
        return KvMarketplace.builder()
                .namespace(Workloads.NAMESPACE)
                .kvCache(cache)
                .device(device)
                .registry(registry)
                .chunkTokens(Workloads.CHUNK_TOKENS)
                .poolBytes(poolBytes)
                .build();
    }

    /** Writes the pattern: logical block b of the prompt into engine block {@code blockTable[b]}. */
    static void fill(PagedKvCache cache, int[] blockTable) {
        ByteBuffer memory = ((HostBuffer) cache.buffer()).memory();
        int words = (int) (Workloads.LAYOUT.regionBytes() / Long.BYTES);
        for (int b = 0; b < BLOCKS; b++) {
            for (int r = 0; r < Workloads.LAYOUT.regionsPerBlock(); r++) {
                int base = (int) cache.regionOffset(blockTable[b], r);
                for (int w = 0; w < words; w++) {
                    memory.putLong(base + w * Long.BYTES, word(b, r, w));
                }
            }
        }
    }

    /** True when every byte of the prompt's KV is where {@code blockTable} says and equals the pattern. */
    static boolean holdsPattern(PagedKvCache cache, int[] blockTable) {
        ByteBuffer memory = ((HostBuffer) cache.buffer()).memory();
        int words = (int) (Workloads.LAYOUT.regionBytes() / Long.BYTES);
        for (int b = 0; b < BLOCKS; b++) {
            for (int r = 0; r < Workloads.LAYOUT.regionsPerBlock(); r++) {
                int base = (int) cache.regionOffset(blockTable[b], r);
                for (int w = 0; w < words; w++) {
                    if (memory.getLong(base + w * Long.BYTES) != word(b, r, w)) {
                        return false;
                    }
                }
            }
        }
        return true;
    }

    static int[] identityBlocks() {
        int[] ids = new int[BLOCKS];
        for (int i = 0; i < BLOCKS; i++) {
            ids[i] = i;
        }
        return ids;
    }

    private static long word(int block, int region, int word) {
        return Workloads.mix(PATTERN_SEED ^ ((long) block << 40) ^ ((long) region << 24) ^ word);
    }
}
