package io.kvmarket.examples.model;

import java.util.ArrayDeque;
import java.util.BitSet;

/**
 * Hands out KV cache blocks from a free list; a request's block table is the array it gets. Freed blocks are
 * reused most-recently-freed first, so block tables of later requests are not contiguous or ordered, as in a
 * real engine. Not thread-safe: the engine serves one request at a time.
 */
public final class BlockAllocator {

    private final int numBlocks;
    private final ArrayDeque<Integer> free = new ArrayDeque<>();
    private final BitSet inUse = new BitSet();

    public BlockAllocator(int numBlocks) {
        if (numBlocks <= 0) {
            throw new IllegalArgumentException("numBlocks must be positive, was " + numBlocks);
        }
        this.numBlocks = numBlocks;
        for (int b = 0; b < numBlocks; b++) {
            free.addLast(b);
        }
    }

    /**
     * A block table of {@code count} blocks.
     *
     * @throws IllegalStateException when fewer than {@code count} blocks are free
     */
    public int[] allocate(int count) {
        if (count < 0 || count > free.size()) {
            throw new IllegalStateException("cannot allocate " + count + " blocks, " + free.size() + " of "
                    + numBlocks + " free");
        }
        int[] table = new int[count];
        for (int i = 0; i < count; i++) {
            table[i] = free.pollFirst();
            inUse.set(table[i]);
        }
        return table;
    }

    /** Returns every block of the table to the free list. */
    public void free(int[] table) {
        for (int b : table) {
            if (b < 0 || b >= numBlocks || !inUse.get(b)) {
                throw new IllegalArgumentException("block " + b + " is not allocated");
            }
            inUse.clear(b);
            free.addFirst(b);
        }
    }

    public int freeBlocks() {
        return free.size();
    }
}
