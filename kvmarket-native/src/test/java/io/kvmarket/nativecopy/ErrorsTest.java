package io.kvmarket.nativecopy;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class ErrorsTest {
    /** Names codes the way the native library does, without needing it. */
    private static final Errors.ErrorText TEXT = new Errors.ErrorText() {
        @Override
        public String name(int code) {
            return switch (code) {
                case -1 -> "KVM_EINVAL";
                case -2 -> "KVM_ENOMEM";
                case -1100 -> "cudaErrorNoDevice";
                case -1700 -> "cudaErrorIllegalAddress";
                default -> "KVM_UNKNOWN";
            };
        }

        @Override
        public String description(int code) {
            return "text for " + code;
        }
    };

    @Test
    void successCodesPassThrough() {
        assertEquals(0, Errors.check("op", 0, TEXT));
        assertEquals(3, Errors.check("op", 3, TEXT));
    }

    @Test
    void cudaCodeBecomesExceptionWithCudaErrorAndName() {
        NativeCopyException e = assertThrows(NativeCopyException.class,
                () -> Errors.check("cudaMemcpyBatchAsync", -1700, TEXT));
        assertEquals(-1700, e.code());
        assertEquals(700, e.cudaError());
        assertTrue(e.isCudaError());
        assertEquals("cudaMemcpyBatchAsync", e.operation());
        assertEquals("cudaMemcpyBatchAsync failed: cudaErrorIllegalAddress (cudaError 700, code -1700): "
                + "text for -1700", e.getMessage());
    }

    @Test
    void nativeArgumentCodeIsNotACudaError() {
        NativeCopyException e = assertThrows(NativeCopyException.class,
                () -> Errors.check("gather copy kernel", Errors.EINVAL, TEXT));
        assertEquals(-1, e.code());
        assertEquals(NativeCopyException.NOT_CUDA, e.cudaError());
        assertFalse(e.isCudaError());
        assertEquals("gather copy kernel failed: KVM_EINVAL (code -1): text for -1", e.getMessage());
    }

    @Test
    void codeRangesSplitAtCudaBase() {
        assertFalse(Errors.isCudaCode(-999));
        assertTrue(Errors.isCudaCode(-1000));
        assertEquals(0, Errors.cudaError(-1000));
        assertEquals(100, Errors.cudaError(-1100));
        assertEquals(NativeCopyException.NOT_CUDA, Errors.cudaError(Errors.ENOMEM));
        assertEquals(NativeCopyException.NOT_CUDA, Errors.cudaError(Errors.EINTERNAL));
    }
}
