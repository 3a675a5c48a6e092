package io.kvmarket.nvlink;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.nativecopy.CopyMethod;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/** Runs only where CUDA is usable; elsewhere every test is skipped as an assumption, not failed. */
class CudaDeviceTest {

    @BeforeEach
    void needGpu() {
        assumeTrue(CudaRuntime.isAvailable(), "no usable GPU: " + CudaRuntime.unavailabilityCause());
    }

    @ParameterizedTest
    @EnumSource(CopyMethod.class)
    void scatteredSegmentsLandByteForByte(CopyMethod method) {
        try (CudaDevice d = new CudaDevice(0, method)) {
            int size = 1 << 20;
            byte[] src = new byte[size];
            new Random(1).nextBytes(src);
            CudaBuffer s = (CudaBuffer) d.allocate(size);
            CudaBuffer t = (CudaBuffer) d.allocate(size);
            GpuKv.upload(s, 0, src);
            byte[] expected = new byte[size];
            CopyBatch.Builder b = CopyBatch.builder();
            Random rnd = new Random(2);
            for (int dst = 0; dst + 9000 < size; dst += 9000) {
                int len = 1 + rnd.nextInt(8192); // odd sizes and unaligned offsets too
                int from = rnd.nextInt(size - len);
                b.add(from, dst + 3, len);
                System.arraycopy(src, from, expected, dst + 3, len);
            }
            d.copy(s, t, b.build()).join();
            assertArrayEquals(expected, GpuKv.download(t, 0, size));
        }
    }

    @Test
    void exportedHandleNamesThisGpuByPciBusIdAndOpensInItsOwnProcess() {
        try (CudaDevice d = new CudaDevice(0)) {
            DeviceBuffer b = d.allocate(4096);
            CudaIpcHandle h = CudaIpcHandle.decode(d.exportHandle(b));
            assertTrue(d.name().contains(h.pciBusId()), d.name() + " vs " + h.pciBusId());
            assertSame(b, d.openHandle(d.exportHandle(b)), "CUDA cannot map its own process's handle");
        }
    }

    @ParameterizedTest
    @EnumSource(CopyMethod.class)
    void outOfBoundsBatchIsRejectedBeforeAnyCopy(CopyMethod method) {
        try (CudaDevice d = new CudaDevice(0, method)) {
            DeviceBuffer s = d.allocate(4096);
            DeviceBuffer t = d.allocate(4096);
            assertThrows(IllegalArgumentException.class,
                    () -> d.copy(s, t, CopyBatch.builder().add(4000, 0, 200).build()));
        }
    }
}
