package io.kvmarket.kv;

import io.kvmarket.device.CopyBatch;

/**
 * How one chunk is laid out in export-pool memory: region-major, so region r of the chunk's blocks is one
 * contiguous run ({@code offset = (r * blocksPerChunk + b) * regionBytes}). An engine whose consecutive blocks are
 * contiguous per region (vLLM's per-layer pools, given consecutive block ids) then copies a whole chunk in one
 * segment per region.
 */
public record ChunkFormat(KvLayout layout, int chunkTokens) {

    public ChunkFormat {
        if (chunkTokens <= 0 || chunkTokens % layout.tokensPerBlock() != 0) {
            throw new IllegalArgumentException("chunkTokens " + chunkTokens + " must be a positive multiple of "
                    + layout.tokensPerBlock());
        }
    }

    public int blocksPerChunk() {
        return chunkTokens / layout.tokensPerBlock();
    }

    public long chunkBytes() {
        return layout.regionBytes() * layout.regionsPerBlock() * blocksPerChunk();
    }

    /** Offset inside a pooled chunk of region {@code region} of the chunk's block {@code block}. */
    public long offsetInChunk(int region, int block) {
        return ((long) region * blocksPerChunk() + block) * layout.regionBytes();
    }

    /**
     * Adds the segments that move chunk {@code chunkIndex} of a request between the engine's cache and a pooled
     * chunk at {@code pooledOffset}.
     *
     * @param engineBlocks the request's block table: block i holds tokens [i*B, (i+1)*B)
     * @param toEngine     true for an import (pool to engine), false for an export (engine to pool)
     */
    public void addChunk(CopyBatch.Builder batch, PagedKvCache engine, int[] engineBlocks, int chunkIndex,
                         long pooledOffset, boolean toEngine) {
        int bpc = blocksPerChunk();
        long regionBytes = layout.regionBytes();
        for (int r = 0; r < layout.regionsPerBlock(); r++) {
            for (int b = 0; b < bpc; b++) {
                long engineOffset = engine.regionOffset(engineBlocks[chunkIndex * bpc + b], r);
                long pooled = pooledOffset + offsetInChunk(r, b);
                if (toEngine) {
                    batch.add(pooled, engineOffset, regionBytes);
                } else {
                    batch.add(engineOffset, pooled, regionBytes);
                }
            }
        }
    }
}
