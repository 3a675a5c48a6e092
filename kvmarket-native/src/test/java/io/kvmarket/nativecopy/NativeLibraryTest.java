package io.kvmarket.nativecopy;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeFalse;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import org.junit.jupiter.api.Test;

/**
 * Calls into the JNI and CUDA libraries where they load, GPU or not: error names come from the CUDA
 * runtime, native argument checks answer without touching CUDA, and without a driver a copy returns the
 * probe's CUDA code instead of crashing.
 */
class NativeLibraryTest {
    private static final long[] ZERO = {0};
    private static final long[] SIXTEEN = {16};

    @Test
    void errorNamesAndTextsComeFromTheNativeLibrary() {
        assumeTrue(NativeCopy.librariesLoaded(), "native libraries not loaded");
        assertEquals("cudaErrorInsufficientDriver", KvmCopyLib.kvm_error_name(-1035));
        assertEquals("cudaErrorNoDevice", KvmCopyLib.kvm_error_name(-1100));
        assertEquals("no CUDA-capable device is detected", KvmCopyLib.kvm_error_string(-1100));
        assertEquals("KVM_EINVAL", KvmCopyLib.kvm_error_name(Errors.EINVAL));
        assertEquals("KVM_ENOMEM", KvmCopyLib.kvm_error_name(Errors.ENOMEM));
        assertEquals("KVM_EINTERNAL", KvmCopyLib.kvm_error_name(Errors.EINTERNAL));
    }

    @Test
    void nativeSideRejectsBadArgumentsWithEinval() {
        assumeTrue(NativeCopy.librariesLoaded(), "native libraries not loaded");
        for (CopyMethod m : CopyMethod.values()) {
            assertEquals(Errors.EINVAL, call(m, 4096, 8192, ZERO, ZERO, new long[] {-1}, 1), m + " negative length");
            assertEquals(Errors.EINVAL, call(m, 4096, 8192, new long[] {-16}, ZERO, SIXTEEN, 1), m + " negative offset");
            assertEquals(Errors.EINVAL, call(m, 4096, 8192, ZERO, ZERO, SIXTEEN, 0), m + " count 0");
            assertEquals(Errors.EINVAL, call(m, 4096, 8192, null, ZERO, SIXTEEN, 1), m + " null array");
            assertEquals(Errors.EINVAL, call(m, 0, 8192, ZERO, ZERO, SIXTEEN, 1), m + " null base");
            assertEquals(Errors.EINVAL, call(m, 4096, -4096L, ZERO, new long[] {4000}, new long[] {100}, 1),
                    m + " address overflow");
        }
    }

    @Test
    void withoutDriverACopyReturnsTheProbedCudaError() {
        assumeTrue(NativeCopy.librariesLoaded(), "native libraries not loaded");
        assumeFalse(NativeCopy.isAvailable(), "a CUDA device is present");
        int probe = KvmCopyLib.kvm_cuda_probe();
        assumeTrue(probe < 0, "driver present, no device");
        assertTrue(Errors.isCudaCode(probe), "probe code " + probe);
        for (CopyMethod m : CopyMethod.values()) {
            assertEquals(probe, call(m, 4096, 8192, ZERO, ZERO, SIXTEEN, 1), m.toString());
        }
        assertEquals(probe, KvmCopyLib.kvm_stream_synchronize(0));
        assertTrue(NativeCopy.unavailabilityCause().getMessage().contains(KvmCopyLib.kvm_error_name(probe)),
                NativeCopy.unavailabilityCause().getMessage());
    }

    private static int call(CopyMethod m, long src, long dst, long[] s, long[] d, long[] l, int count) {
        return switch (m) {
            case MEMCPY_BATCH -> KvmCopyLib.kvm_copy_memcpy_batch(src, dst, s, d, l, count, 0);
            case GATHER_KERNEL -> KvmCopyLib.kvm_copy_gather_kernel(src, dst, s, d, l, count, 0);
        };
    }
}
