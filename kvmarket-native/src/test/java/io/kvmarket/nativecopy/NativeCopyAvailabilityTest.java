package io.kvmarket.nativecopy;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeFalse;

import java.util.concurrent.atomic.AtomicBoolean;
import org.junit.jupiter.api.Test;

class NativeCopyAvailabilityTest {
    private static final Errors.ErrorText TEXT = new Errors.ErrorText() {
        @Override
        public String name(int code) {
            return code == -1035 ? "cudaErrorInsufficientDriver" : "OTHER";
        }

        @Override
        public String description(int code) {
            return "CUDA driver version is insufficient for CUDA runtime version";
        }
    };

    private static final ClassLoader LOADER = NativeCopyAvailabilityTest.class.getClassLoader();
    private static final String PRESENT = "io/kvmarket/nativecopy/NativeCopy.class";

    @Test
    void unavailableMachineKeepsCauseAndEnsureAvailabilityThrowsIt() {
        assumeFalse(NativeCopy.isAvailable(), "a CUDA device is present");
        Throwable cause = NativeCopy.unavailabilityCause();
        assertNotNull(cause);
        assertEquals(0, NativeCopy.deviceCount());
        IllegalStateException e = assertThrows(IllegalStateException.class, NativeCopy::ensureAvailability);
        assertSame(cause, e.getCause());
    }

    @Test
    void unavailableMachineRejectsValidCopyWithIllegalState() {
        assumeFalse(NativeCopy.isAvailable(), "a CUDA device is present");
        long[] one = {0};
        long[] len = {16};
        for (CopyMethod m : CopyMethod.values()) {
            IllegalStateException e = assertThrows(IllegalStateException.class,
                    () -> NativeCopy.copyBatch(m, 4096, 8192, one, one, len, 1, 0));
            assertSame(NativeCopy.unavailabilityCause(), e.getCause());
        }
        assertThrows(IllegalStateException.class, () -> NativeCopy.synchronize(0));
        assertThrows(IllegalStateException.class, () -> NativeCopy.releaseStream(0));
    }

    @Test
    void availabilityAndCauseAgree() {
        assertEquals(NativeCopy.isAvailable(), NativeCopy.unavailabilityCause() == null);
        assertEquals(NativeCopy.isAvailable(), NativeCopy.deviceCount() > 0);
    }

    @Test
    void missingJniLibraryMeansBuiltWithoutCudaAndNothingIsLoaded() {
        AtomicBoolean loaded = new AtomicBoolean();
        NativeCopy.Probe p = NativeCopy.probe(LOADER, () -> "io/kvmarket/nativecopy/no-such-platform/libx.so",
                () -> loaded.set(true), () -> 1, TEXT);
        assertFalse(loaded.get());
        assertFalse(p.loaded());
        assertEquals(0, p.deviceCount());
        assertTrue(p.cause() instanceof UnsatisfiedLinkError, String.valueOf(p.cause()));
        assertTrue(p.cause().getMessage().contains("built without CUDA"), p.cause().getMessage());
        assertTrue(p.cause().getMessage().contains("no-such-platform/libx.so"), p.cause().getMessage());
    }

    @Test
    void loadFailureIsTheCauseWithItsRootReasonInTheMessage() {
        UnsatisfiedLinkError root = new UnsatisfiedLinkError("libcudart.so.13: cannot open shared object file");
        UnsatisfiedLinkError failure = new UnsatisfiedLinkError("no jnikvmcopy in java.library.path");
        failure.initCause(root);
        NativeCopy.Probe p = NativeCopy.probe(LOADER, () -> PRESENT, () -> {
            throw failure;
        }, () -> 1, TEXT);
        assertTrue(p.cause() instanceof UnsatisfiedLinkError, String.valueOf(p.cause()));
        assertSame(failure, p.cause().getCause());
        assertEquals("could not load the native copy libraries (libjnikvmcopy, libkvmcopy, CUDA 13 runtime"
                + " libcudart.so.13): libcudart.so.13: cannot open shared object file", p.cause().getMessage());
        assertFalse(p.loaded());
        assertEquals(0, p.deviceCount());
    }

    @Test
    void failingResourceLookupIsTheCauseNotAnException() {
        IllegalStateException failure = new IllegalStateException("no platform");
        NativeCopy.Probe p = NativeCopy.probe(LOADER, () -> {
            throw failure;
        }, () -> { }, () -> 1, TEXT);
        assertSame(failure, p.cause());
    }

    @Test
    void negativeDeviceCountNamesTheCudaError() {
        NativeCopy.Probe p = NativeCopy.probe(LOADER, () -> PRESENT, () -> { }, () -> -1035, TEXT);
        assertTrue(p.loaded());
        assertEquals(0, p.deviceCount());
        assertEquals("cudaGetDeviceCount returned cudaErrorInsufficientDriver (cudaError 35, code -1035): "
                + "CUDA driver version is insufficient for CUDA runtime version", p.cause().getMessage());
    }

    @Test
    void zeroDevicesIsUnavailable() {
        NativeCopy.Probe p = NativeCopy.probe(LOADER, () -> PRESENT, () -> { }, () -> 0, TEXT);
        assertEquals("cudaGetDeviceCount found no CUDA device", p.cause().getMessage());
    }

    @Test
    void devicesFoundIsAvailable() {
        NativeCopy.Probe p = NativeCopy.probe(LOADER, () -> PRESENT, () -> { }, () -> 2, TEXT);
        assertNull(p.cause());
        assertTrue(p.loaded());
        assertEquals(2, p.deviceCount());
    }

    @Test
    void jniResourceIsWhereTheBuildPutsIt() {
        assertTrue(NativeCopy.jniResource().matches("io/kvmarket/nativecopy/[a-z0-9_-]+/[^/]*jnikvmcopy[^/]*"),
                NativeCopy.jniResource());
    }
}
