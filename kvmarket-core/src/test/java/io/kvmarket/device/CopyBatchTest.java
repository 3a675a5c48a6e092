package io.kvmarket.device;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

class CopyBatchTest {

    @Test
    void contiguousRunsMergeIntoOneSegment() {
        CopyBatch b = CopyBatch.builder().add(0, 100, 10).add(10, 110, 10).add(20, 120, 5).add(100, 0, 4).build();
        assertEquals(2, b.segments());
        assertEquals(0, b.srcOffset(0));
        assertEquals(100, b.dstOffset(0));
        assertEquals(25, b.length(0));
        assertEquals(100, b.srcOffset(1));
        assertEquals(29, b.totalBytes());
    }

    @Test
    void runsContiguousOnOneSideOnlyStaySeparate() {
        CopyBatch b = CopyBatch.builder().add(0, 0, 8).add(8, 16, 8).build();
        assertEquals(2, b.segments());
    }

    @Test
    void rejectsNegativeEmptyAndOverflowingSegments() {
        assertThrows(IllegalArgumentException.class, () -> CopyBatch.builder().add(-1, 0, 4));
        assertThrows(IllegalArgumentException.class, () -> CopyBatch.builder().add(0, -1, 4));
        assertThrows(IllegalArgumentException.class, () -> CopyBatch.builder().add(0, 0, 0));
        assertThrows(IllegalArgumentException.class, () -> CopyBatch.builder().add(Long.MAX_VALUE, 0, 2));
    }

    @Test
    void boundsCheckNamesTheOffendingSegment() {
        CopyBatch b = CopyBatch.builder().add(0, 0, 8).add(100, 50, 8).build();
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> b.checkBounds(104, 1000));
        assertEquals(true, e.getMessage().startsWith("segment 1"), e.getMessage());
    }
}
