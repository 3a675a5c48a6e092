package io.kvmarket.kv;

import io.kvmarket.device.DeviceBuffer;

/**
 * An engine's paged KV cache as the marketplace sees it: one device buffer holding {@code numBlocks} blocks in
 * the given layout. The marketplace copies into and out of it; the engine owns it.
 */
public record PagedKvCache(DeviceBuffer buffer, KvLayout layout, int numBlocks) {

    public PagedKvCache {
        if (buffer == null || layout == null) {
            throw new IllegalArgumentException("buffer and layout are required");
        }
        if (numBlocks <= 0) {
            throw new IllegalArgumentException("numBlocks must be positive, was " + numBlocks);
        }
        if (requiredBytes(layout, numBlocks) > buffer.size()) {
            throw new IllegalArgumentException("buffer of " + buffer.size() + " bytes is smaller than "
                    + numBlocks + " blocks of " + layout.blockBytes() + " bytes");
        }
    }

    /** Bytes a cache of {@code numBlocks} blocks of this layout needs. */
    public static long requiredBytes(KvLayout layout, int numBlocks) {
        return layout.blockBytes() * numBlocks;
    }

    /** Byte offset of region {@code region} (K or V of one layer) of block {@code block}. */
    public long regionOffset(int block, int region) {
        if (block < 0 || block >= numBlocks) {
            throw new IllegalArgumentException("block " + block + " outside [0, " + numBlocks + ")");
        }
        long regionBytes = layout.regionBytes();
        if (layout.order() == LayoutOrder.LAYER_MAJOR) {
            return ((long) region * numBlocks + block) * regionBytes;
        }
        return ((long) block * layout.regionsPerBlock() + region) * regionBytes;
    }
}
