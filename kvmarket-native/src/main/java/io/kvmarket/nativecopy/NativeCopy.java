package io.kvmarket.nativecopy;

import java.util.Objects;
import java.util.function.IntSupplier;
import java.util.function.Supplier;
import org.bytedeco.javacpp.Loader;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Batched device-to-device copies in one native call per batch, the way an import needs them.
 *
 * <p>Availability is decided once, when this class is initialised: the native libraries are loaded
 * (unless the build had no CUDA headers and so packaged none), then {@code cudaGetDeviceCount} must find
 * at least one device. The outcome and its cause are kept; one INFO line says which. Initialisation never
 * throws: without CUDA, driver or GPU, {@link #isAvailable()} is {@code false} and
 * {@link #unavailabilityCause()} says why. Callers ask {@link #isAvailable()} and fall back, or call
 * {@link #ensureAvailability()}.
 *
 * <p>Streams are raw {@code cudaStream_t} values; {@code 0} means the calling thread's per-thread default
 * stream ({@code cudaStreamPerThread}), not the legacy NULL stream. The caller's current CUDA device must
 * own the stream and both allocations. Copies are asynchronous: a return means "enqueued", and a failure
 * of the copy itself surfaces at {@link #synchronize(long)}.
 *
 * <p>Programming errors (bad counts, short arrays, negative offsets or lengths, address overflow) throw
 * {@link IllegalArgumentException} before any native call; run-time failures throw
 * {@link NativeCopyException}. Thread-safe.
 */
public final class NativeCopy {
    private static final Logger LOG = LoggerFactory.getLogger(NativeCopy.class);

    static final Errors.ErrorText NATIVE_TEXT = new Errors.ErrorText() {
        @Override
        public String name(int code) {
            return KvmCopyLib.kvm_error_name(code);
        }

        @Override
        public String description(int code) {
            return KvmCopyLib.kvm_error_string(code);
        }
    };

    private static final Probe PROBE;

    static {
        PROBE = probe(NativeCopy.class.getClassLoader(), NativeCopy::jniResource,
                () -> Loader.load(KvmCopyLib.class), KvmCopyLib::kvm_cuda_probe, NATIVE_TEXT);
        if (PROBE.cause() == null) {
            LOG.info("Native batched copy available: {} CUDA device(s)", PROBE.deviceCount());
        } else {
            LOG.info("Native batched copy unavailable: {}", PROBE.cause().toString());
        }
    }

    private NativeCopy() {
    }

    /** {@code true} when the native libraries loaded and CUDA found at least one device. */
    public static boolean isAvailable() {
        return PROBE.cause() == null;
    }

    /**
     * @throws IllegalStateException with {@link #unavailabilityCause()} as its cause, when not available
     */
    public static void ensureAvailability() {
        Throwable cause = PROBE.cause();
        if (cause != null) {
            throw new IllegalStateException("native batched copy is unavailable: " + cause.getMessage(), cause);
        }
    }

    /** Why the native copy is unavailable, or {@code null} when it is available. */
    public static Throwable unavailabilityCause() {
        return PROBE.cause();
    }

    /** The number of CUDA devices seen at class initialisation; 0 when unavailable. */
    public static int deviceCount() {
        return PROBE.deviceCount();
    }

    /**
     * Enqueues the copy of segments {@code 0..count-1}: {@code lengths[i]} bytes from
     * {@code srcBase + srcOffsets[i]} to {@code dstBase + dstOffsets[i]}, all on {@code stream}, in one
     * native call. Zero-length segments are allowed and skipped. Destinations must not overlap each other
     * or any source of the same batch. The arrays are only read during the call.
     *
     * @throws IllegalArgumentException for a base of 0, {@code count} outside {@code 1..} the shortest
     *     array, a negative offset or length, or a segment whose end overflows the address space
     * @throws IllegalStateException when not {@link #isAvailable() available}
     * @throws NativeCopyException when CUDA refuses the copy
     */
    public static void copyBatch(CopyMethod method, long srcBase, long dstBase, long[] srcOffsets,
            long[] dstOffsets, long[] lengths, int count, long stream) {
        Objects.requireNonNull(method, "method");
        checkSegments(srcBase, dstBase, srcOffsets, dstOffsets, lengths, count);
        ensureAvailability();
        int code = switch (method) {
            case MEMCPY_BATCH -> KvmCopyLib.kvm_copy_memcpy_batch(
                    srcBase, dstBase, srcOffsets, dstOffsets, lengths, count, stream);
            case GATHER_KERNEL -> KvmCopyLib.kvm_copy_gather_kernel(
                    srcBase, dstBase, srcOffsets, dstOffsets, lengths, count, stream);
        };
        Errors.check(method.operation(), code, NATIVE_TEXT);
    }

    /**
     * Waits for all work on {@code stream} ({@code cudaStreamSynchronize}).
     *
     * @throws NativeCopyException when the stream reports an error, e.g. from an earlier copy
     */
    public static void synchronize(long stream) {
        ensureAvailability();
        Errors.check("cudaStreamSynchronize", KvmCopyLib.kvm_stream_synchronize(stream), NATIVE_TEXT);
    }

    /**
     * Frees what {@link CopyMethod#GATHER_KERNEL} keeps for {@code stream} on the current device (pinned
     * staging and device segment table), after waiting for its last use. Call it before destroying a
     * stream that the kernel path used; a no-op for other streams.
     */
    public static void releaseStream(long stream) {
        ensureAvailability();
        Errors.check("releaseStream", KvmCopyLib.kvm_stream_release(stream), NATIVE_TEXT);
    }

    /** Whether the native libraries loaded (even if CUDA then found no driver or device); for tests. */
    static boolean librariesLoaded() {
        return PROBE.loaded();
    }

    static void checkSegments(long srcBase, long dstBase, long[] srcOffsets, long[] dstOffsets,
            long[] lengths, int count) {
        Objects.requireNonNull(srcOffsets, "srcOffsets");
        Objects.requireNonNull(dstOffsets, "dstOffsets");
        Objects.requireNonNull(lengths, "lengths");
        if (srcBase == 0 || dstBase == 0) {
            throw new IllegalArgumentException("device base address is 0: srcBase=0x"
                    + Long.toHexString(srcBase) + " dstBase=0x" + Long.toHexString(dstBase));
        }
        if (count <= 0) {
            throw new IllegalArgumentException("count must be positive: " + count);
        }
        checkLength("srcOffsets", srcOffsets, count);
        checkLength("dstOffsets", dstOffsets, count);
        checkLength("lengths", lengths, count);
        for (int i = 0; i < count; i++) {
            long len = lengths[i];
            if (len < 0) {
                throw new IllegalArgumentException("lengths[" + i + "] is negative: " + len);
            }
            checkEnd("src", srcBase, srcOffsets, i, len);
            checkEnd("dst", dstBase, dstOffsets, i, len);
        }
    }

    private static void checkLength(String name, long[] array, int count) {
        if (array.length < count) {
            throw new IllegalArgumentException(
                    "count " + count + " exceeds " + name + ".length " + array.length);
        }
    }

    private static void checkEnd(String side, long base, long[] offsets, int i, long len) {
        long offset = offsets[i];
        if (offset < 0) {
            throw new IllegalArgumentException(side + "Offsets[" + i + "] is negative: " + offset);
        }
        long end = offset + len;
        if (end < 0 || Long.compareUnsigned(base + end, base) < 0) {
            throw new IllegalArgumentException("segment " + i + " overflows the address space: " + side
                    + "Base=0x" + Long.toHexString(base) + " offset=" + offset + " length=" + len);
        }
    }

    /**
     * JavaCPP reports a failed load as "no jnikvmcopy in java.library.path"; the reason (usually
     * "libcudart.so.13: cannot open shared object file") is at the bottom of the cause chain. Bring it up.
     */
    private static UnsatisfiedLinkError linkFailure(Throwable failure) {
        Throwable root = failure;
        while (root.getCause() != null && root.getCause() != root) {
            root = root.getCause();
        }
        String reason = root.getMessage() != null ? root.getMessage() : root.toString();
        UnsatisfiedLinkError e = new UnsatisfiedLinkError("could not load the native copy libraries"
                + " (libjnikvmcopy, libkvmcopy, CUDA 13 runtime libcudart.so.13): " + reason);
        e.initCause(failure);
        return e;
    }

    /** Where the build puts the JNI library of {@link KvmCopyLib} for this platform. */
    static String jniResource() {
        return "io/kvmarket/nativecopy/" + Loader.getPlatform() + "/"
                + System.mapLibraryName(KvmCopyLib.JNI_LIBRARY);
    }

    /**
     * The outcome of the one-time probe: whether the native libraries loaded, and a device count or why
     * there is no native copy.
     */
    record Probe(boolean loaded, int deviceCount, Throwable cause) {
    }

    /**
     * Decides availability without ever throwing: the JNI library must be on the class path (the build
     * packages it only when CUDA headers were present), {@code load} must succeed, and
     * {@code deviceCount} must report at least one device.
     */
    static Probe probe(ClassLoader classLoader, Supplier<String> jniResource, Runnable load,
            IntSupplier deviceCount, Errors.ErrorText text) {
        boolean loaded = false;
        try {
            String resource = jniResource.get();
            if (classLoader == null || classLoader.getResource(resource) == null) {
                return new Probe(false, 0, new UnsatisfiedLinkError("kvmarket-native was built without CUDA"
                        + " (or not for this platform): no " + resource + " on the class path"));
            }
            try {
                load.run();
            } catch (Throwable t) {
                return new Probe(false, 0, linkFailure(t));
            }
            loaded = true;
            int count = deviceCount.getAsInt();
            if (count < 0) {
                return new Probe(true, 0, new IllegalStateException(
                        "cudaGetDeviceCount returned " + Errors.describe(count, text)));
            }
            if (count == 0) {
                return new Probe(true, 0, new IllegalStateException("cudaGetDeviceCount found no CUDA device"));
            }
            return new Probe(true, count, null);
        } catch (Throwable t) {
            return new Probe(loaded, 0, t);
        }
    }
}
