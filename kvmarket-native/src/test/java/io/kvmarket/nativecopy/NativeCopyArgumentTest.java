package io.kvmarket.nativecopy;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;

/** Argument validation happens in Java, before availability is checked, so it runs everywhere. */
class NativeCopyArgumentTest {
    private static final long SRC = 0x7f00_0000_0000L;
    private static final long DST = 0x7f10_0000_0000L;

    private static IllegalArgumentException rejected(Executable call) {
        return assertThrows(IllegalArgumentException.class, call);
    }

    private static void copy(long src, long dst, long[] s, long[] d, long[] l, int count) {
        NativeCopy.copyBatch(CopyMethod.GATHER_KERNEL, src, dst, s, d, l, count, 0);
    }

    @Test
    void negativeLengthIsRejectedWithIndexAndValue() {
        IllegalArgumentException e = rejected(() ->
                copy(SRC, DST, new long[] {0, 64}, new long[] {0, 64}, new long[] {64, -5}, 2));
        assertEquals("lengths[1] is negative: -5", e.getMessage());
    }

    @Test
    void negativeSourceOffsetIsRejected() {
        IllegalArgumentException e = rejected(() ->
                copy(SRC, DST, new long[] {-16}, new long[] {0}, new long[] {16}, 1));
        assertEquals("srcOffsets[0] is negative: -16", e.getMessage());
    }

    @Test
    void negativeDestinationOffsetIsRejected() {
        IllegalArgumentException e = rejected(() ->
                copy(SRC, DST, new long[] {0, 0}, new long[] {0, -7}, new long[] {1, 1}, 2));
        assertEquals("dstOffsets[1] is negative: -7", e.getMessage());
    }

    @Test
    void countBeyondShortestArrayIsRejected() {
        IllegalArgumentException e = rejected(() ->
                copy(SRC, DST, new long[] {0, 0, 0}, new long[] {0, 0}, new long[] {1, 1, 1}, 3));
        assertEquals("count 3 exceeds dstOffsets.length 2", e.getMessage());
        e = rejected(() -> copy(SRC, DST, new long[] {0}, new long[] {0}, new long[] {1}, 2));
        assertEquals("count 2 exceeds srcOffsets.length 1", e.getMessage());
        e = rejected(() -> copy(SRC, DST, new long[] {0, 0}, new long[] {0, 0}, new long[] {1}, 2));
        assertEquals("count 2 exceeds lengths.length 1", e.getMessage());
    }

    @Test
    void nonPositiveCountIsRejected() {
        long[] one = {0};
        assertEquals("count must be positive: 0",
                rejected(() -> copy(SRC, DST, one, one, one, 0)).getMessage());
        assertEquals("count must be positive: -3",
                rejected(() -> copy(SRC, DST, one, one, one, -3)).getMessage());
    }

    @Test
    void zeroBaseAddressIsRejected() {
        long[] one = {0};
        long[] len = {8};
        assertEquals("device base address is 0: srcBase=0x0 dstBase=0x7f1000000000",
                rejected(() -> copy(0, DST, one, one, len, 1)).getMessage());
        assertEquals("device base address is 0: srcBase=0x7f0000000000 dstBase=0x0",
                rejected(() -> copy(SRC, 0, one, one, len, 1)).getMessage());
    }

    @Test
    void segmentEndPastTheAddressSpaceIsRejected() {
        IllegalArgumentException e = rejected(() ->
                copy(SRC, -4096L, new long[] {0}, new long[] {4000}, new long[] {100}, 1));
        assertEquals("segment 0 overflows the address space: dstBase=0xfffffffffffff000 offset=4000 length=100",
                e.getMessage());
        e = rejected(() -> copy(SRC, DST, new long[] {Long.MAX_VALUE}, new long[] {0}, new long[] {1}, 1));
        assertEquals("segment 0 overflows the address space: srcBase=0x7f0000000000 offset="
                + Long.MAX_VALUE + " length=1", e.getMessage());
    }

    @Test
    void nullArgumentsAreRejected() {
        long[] one = {0};
        assertThrows(NullPointerException.class, () ->
                NativeCopy.copyBatch(null, SRC, DST, one, one, one, 1, 0));
        assertThrows(NullPointerException.class, () -> copy(SRC, DST, null, one, one, 1));
        assertThrows(NullPointerException.class, () -> copy(SRC, DST, one, null, one, 1));
        assertThrows(NullPointerException.class, () -> copy(SRC, DST, one, one, null, 1));
    }

    @Test
    void arraysLongerThanCountAndZeroLengthsAreValid() {
        NativeCopy.checkSegments(SRC, DST, new long[] {0, 16, -1}, new long[] {32, 0, -1},
                new long[] {16, 0, -1}, 2);
    }
}
