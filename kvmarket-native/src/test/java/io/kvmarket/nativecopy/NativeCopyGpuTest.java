package io.kvmarket.nativecopy;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.util.Arrays;
import java.util.Random;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * Copies scattered segments between two real device allocations with each method and checks every byte
 * of the destination, inside and outside the segments. Runs only where {@link NativeCopy#isAvailable()}.
 */
class NativeCopyGpuTest {
    private static final int SIZE = 1 << 20;
    private static final byte FILL = (byte) 0xEE;

    private final byte[] source = new byte[SIZE];
    private long src;
    private long dst;
    private long stream;

    @BeforeEach
    void allocate() {
        assumeTrue(NativeCopy.isAvailable(), () -> "no CUDA: " + NativeCopy.unavailabilityCause());
        new Random(42).nextBytes(source);
        src = alloc(SIZE);
        dst = alloc(SIZE);
        ok("htod", KvmCopyLib.kvm_memcpy_htod(src, source, SIZE));
        long[] out = new long[1];
        ok("kvm_stream_create", KvmCopyLib.kvm_stream_create(out));
        stream = out[0];
    }

    @AfterEach
    void free() {
        if (stream != 0) {
            ok("kvm_stream_destroy", KvmCopyLib.kvm_stream_destroy(stream));
        }
        if (src != 0) {
            ok("free", KvmCopyLib.kvm_device_free(src));
        }
        if (dst != 0) {
            ok("free", KvmCopyLib.kvm_device_free(dst));
        }
    }

    /** Aligned, misaligned, tail, zero-length, multi-chunk (> 256 KiB) and end-of-buffer segments. */
    private static final long[][] MIXED = {
        // srcOffset, dstOffset, length
        {0, 65_536, 32_768},
        {131_072, 16, 4_096},
        {3, 500_001, 1_001},
        {17, 8_193, 4_099},
        {200_000, 300_000, 1_000},
        {5, 7, 0},
        {262_144, 655_360, 307_200},
        {SIZE - 100, SIZE - 50, 50},
    };

    @Test
    void memcpyBatchCopiesMixedSegmentsOnDefaultStream() {
        copyAndCheck(CopyMethod.MEMCPY_BATCH, MIXED, 0);
    }

    @Test
    void gatherKernelCopiesMixedSegmentsOnDefaultStream() {
        copyAndCheck(CopyMethod.GATHER_KERNEL, MIXED, 0);
    }

    @Test
    void memcpyBatchCopiesMixedSegmentsOnCreatedStream() {
        copyAndCheck(CopyMethod.MEMCPY_BATCH, MIXED, stream);
    }

    @Test
    void gatherKernelCopiesMixedSegmentsOnCreatedStream() {
        copyAndCheck(CopyMethod.GATHER_KERNEL, MIXED, stream);
    }

    @Test
    void bothMethodsScatterManyPagedBlocksAndReuseTheirTables() {
        for (CopyMethod m : CopyMethod.values()) {
            copyAndCheck(m, MIXED, stream);
            copyAndCheck(m, pagedBlocks(4_096, 128, 7), stream);
            copyAndCheck(m, pagedBlocks(64, 4_096, 11), stream);
        }
        NativeCopy.releaseStream(stream);
        copyAndCheck(CopyMethod.GATHER_KERNEL, MIXED, stream);
    }

    /** {@code blocks} blocks of {@code blockBytes}: source block i goes to a shuffled destination block. */
    private static long[][] pagedBlocks(int blocks, int blockBytes, long seed) {
        Integer[] order = new Integer[blocks];
        Arrays.setAll(order, i -> i);
        java.util.Collections.shuffle(Arrays.asList(order), new Random(seed));
        long[][] segs = new long[blocks][];
        for (int i = 0; i < blocks; i++) {
            segs[i] = new long[] {(long) i * blockBytes, (long) order[i] * blockBytes, blockBytes};
        }
        return segs;
    }

    private void copyAndCheck(CopyMethod method, long[][] segments, long onStream) {
        byte[] fill = new byte[SIZE];
        Arrays.fill(fill, FILL);
        ok("htod", KvmCopyLib.kvm_memcpy_htod(dst, fill, SIZE));
        int n = segments.length;
        long[] so = new long[n];
        long[] dOff = new long[n];
        long[] len = new long[n];
        byte[] expected = fill.clone();
        for (int i = 0; i < n; i++) {
            so[i] = segments[i][0];
            dOff[i] = segments[i][1];
            len[i] = segments[i][2];
            System.arraycopy(source, (int) so[i], expected, (int) dOff[i], (int) len[i]);
        }
        NativeCopy.copyBatch(method, src, dst, so, dOff, len, n, onStream);
        NativeCopy.synchronize(onStream);
        byte[] actual = new byte[SIZE];
        ok("dtoh", KvmCopyLib.kvm_memcpy_dtoh(actual, dst, SIZE));
        assertArrayEquals(expected, actual, method + " with " + n + " segments on stream " + onStream);
    }

    private static long alloc(long bytes) {
        long[] out = new long[1];
        ok("kvm_device_alloc", KvmCopyLib.kvm_device_alloc(bytes, out));
        return out[0];
    }

    private static void ok(String op, int code) {
        Errors.check(op, code, NativeCopy.NATIVE_TEXT);
    }
}
