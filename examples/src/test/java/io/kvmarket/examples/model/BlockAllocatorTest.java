package io.kvmarket.examples.model;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

class BlockAllocatorTest {

    @Test
    void freedBlocksAreReusedMostRecentlyFreedFirst() {
        BlockAllocator blocks = new BlockAllocator(8);
        int[] first = blocks.allocate(3);
        assertArrayEquals(new int[] {0, 1, 2}, first);
        blocks.free(first);
        assertArrayEquals(new int[] {2, 1, 0, 3}, blocks.allocate(4));
        assertEquals(4, blocks.freeBlocks());
    }

    @Test
    void allocatingMoreThanIsFreeThrows() {
        BlockAllocator blocks = new BlockAllocator(4);
        blocks.allocate(3);
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> blocks.allocate(2));
        assertEquals("cannot allocate 2 blocks, 1 of 4 free", e.getMessage());
    }

    @Test
    void freeingABlockTwiceThrows() {
        BlockAllocator blocks = new BlockAllocator(4);
        int[] table = blocks.allocate(1);
        blocks.free(table);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> blocks.free(table));
        assertEquals("block 0 is not allocated", e.getMessage());
    }
}
