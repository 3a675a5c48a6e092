package io.kvmarket.nativecopy;

import static org.bytedeco.cuda.global.cudart.cudaDeviceSynchronize;
import static org.bytedeco.cuda.global.cudart.cudaFree;
import static org.bytedeco.cuda.global.cudart.cudaMalloc;
import static org.bytedeco.cuda.global.cudart.cudaMemcpy;
import static org.bytedeco.cuda.global.cudart.cudaMemcpyDeviceToHost;
import static org.bytedeco.cuda.global.cudart.cudaMemcpyHostToDevice;
import static org.bytedeco.cuda.global.cudart.cudaStreamCreateWithFlags;
import static org.bytedeco.cuda.global.cudart.cudaStreamDestroy;
import static org.bytedeco.cuda.global.cudart.cudaStreamNonBlocking;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.util.Arrays;
import java.util.Random;
import org.bytedeco.cuda.cudart.CUstream_st;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.PointerPointer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * Copies scattered segments between two real device allocations with each method and checks every byte
 * of the destination, inside and outside the segments. Runs only where {@link NativeCopy#isAvailable()}.
 * Allocations, host transfers and streams go through JavaCPP's CUDA presets, so the library's C ABI holds only
 * what production calls.
 */
class NativeCopyGpuTest {
    private static final int SIZE = 1 << 20;
    private static final byte FILL = (byte) 0xEE;

    private final byte[] source = new byte[SIZE];
    private Pointer src;
    private Pointer dst;
    private CUstream_st created;
    private long stream;

    @BeforeEach
    void allocate() {
        assumeTrue(NativeCopy.isAvailable(), () -> "no CUDA: " + NativeCopy.unavailabilityCause());
        new Random(42).nextBytes(source);
        src = alloc(SIZE);
        dst = alloc(SIZE);
        upload(src, source);
        created = new CUstream_st();
        ok("cudaStreamCreateWithFlags", cudaStreamCreateWithFlags(created, cudaStreamNonBlocking));
        stream = created.address();
    }

    @AfterEach
    void free() {
        if (stream != 0) {
            NativeCopy.releaseStream(stream);
            ok("cudaStreamDestroy", cudaStreamDestroy(created));
        }
        if (src != null) {
            ok("cudaFree", cudaFree(src));
        }
        if (dst != null) {
            ok("cudaFree", cudaFree(dst));
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
        upload(dst, fill);
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
        NativeCopy.copyBatch(method, src.address(), dst.address(), so, dOff, len, n, onStream);
        NativeCopy.synchronize(onStream);
        byte[] actual = new byte[SIZE];
        BytePointer host = new BytePointer(SIZE);
        ok("cudaMemcpy", cudaMemcpy(host, dst, SIZE, cudaMemcpyDeviceToHost));
        host.get(actual);
        assertArrayEquals(expected, actual, method + " with " + n + " segments on stream " + onStream);
    }

    /**
     * From pageable memory cudaMemcpy returns once the bytes are staged, before the DMA lands: a copy on a
     * non-blocking stream must not start before the device has synchronized.
     */
    private static void upload(Pointer to, byte[] bytes) {
        ok("cudaMemcpy", cudaMemcpy(to, new BytePointer(bytes), bytes.length, cudaMemcpyHostToDevice));
        ok("cudaDeviceSynchronize", cudaDeviceSynchronize());
    }

    private static Pointer alloc(long bytes) {
        PointerPointer<Pointer> out = new PointerPointer<>(1);
        ok("cudaMalloc", cudaMalloc(out, bytes));
        return out.get(0);
    }

    private static void ok(String op, int code) {
        Errors.check(op, code, NativeCopy.NATIVE_TEXT);
    }
}
