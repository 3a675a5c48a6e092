package io.kvmarket.nativecopy;

import org.bytedeco.javacpp.annotation.Cast;
import org.bytedeco.javacpp.annotation.CriticalRegion;
import org.bytedeco.javacpp.annotation.NoException;
import org.bytedeco.javacpp.annotation.Platform;

/**
 * JavaCPP binding of {@code src/main/native/kvm_copy.h}; see that header for each function's contract.
 * Raw and unchecked: only {@link NativeCopy} (and its tests) call it, after loading it with
 * {@code Loader.load(KvmCopyLib.class)}. Every function returns 0 (or a count) or a negative code that
 * {@link Errors} turns into an exception.
 *
 * <p>The JNI library {@code libjnikvmcopy.so} links {@code libkvmcopy.so} (nvcc-built, packaged next to
 * it) and the CUDA runtime {@code libcudart.so.13}, which JavaCPP preloads from the loader path or from
 * {@code /usr/local/cuda/lib64}. Segment arrays are passed as JNI critical regions (no copies); the
 * native side does not block on the GPU while holding them, except to wait for the previous upload of
 * the segment table.
 */
@Platform(
        value = "linux-x86_64",
        include = "kvm_copy.h",
        link = {"kvmcopy", "cudart@.13"},
        preloadpath = {"/usr/local/cuda/lib64/", "/usr/local/cuda-13.0/lib64/"},
        library = "jnikvmcopy")
@NoException
final class KvmCopyLib {
    /** Base name of the JNI library that JavaCPP builds for this class. */
    static final String JNI_LIBRARY = "jnikvmcopy";

    private KvmCopyLib() {
    }

    static native int kvm_cuda_probe();

    static native @Cast("const char*") String kvm_error_name(int code);

    static native @Cast("const char*") String kvm_error_string(int code);

    @CriticalRegion
    static native int kvm_copy_memcpy_batch(
            @Cast("uint64_t") long srcBase,
            @Cast("uint64_t") long dstBase,
            @Cast("const int64_t*") long[] srcOffsets,
            @Cast("const int64_t*") long[] dstOffsets,
            @Cast("const int64_t*") long[] lengths,
            int count,
            @Cast("uint64_t") long stream);

    @CriticalRegion
    static native int kvm_copy_gather_kernel(
            @Cast("uint64_t") long srcBase,
            @Cast("uint64_t") long dstBase,
            @Cast("const int64_t*") long[] srcOffsets,
            @Cast("const int64_t*") long[] dstOffsets,
            @Cast("const int64_t*") long[] lengths,
            int count,
            @Cast("uint64_t") long stream);

    static native int kvm_stream_synchronize(@Cast("uint64_t") long stream);

    static native int kvm_stream_release(@Cast("uint64_t") long stream);
}
