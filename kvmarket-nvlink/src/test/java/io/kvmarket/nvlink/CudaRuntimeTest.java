package io.kvmarket.nvlink;

import io.kvmarket.device.Device;
import io.kvmarket.device.Devices;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.testkit.ChildJvm;
import org.junit.jupiter.api.Test;

import java.time.Duration;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeFalse;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

class CudaRuntimeTest {

    @Test
    void withoutAUsableGpuTheCauseIsKeptAndTheHostDeviceIsUsed() {
        assumeFalse(CudaRuntime.isAvailable(), "a GPU is usable here");
        Throwable cause = CudaRuntime.unavailabilityCause();
        assertNotNull(cause);
        Throwable root = cause;
        while (root.getCause() != null) {
            root = root.getCause();
        }
        // The innermost reason (which library is missing) is in the message a log line shows, not only in the chain.
        assertTrue(root == cause || cause.getMessage().contains(String.valueOf(root.getMessage())), cause.getMessage());
        UnsatisfiedLinkError e = assertThrows(UnsatisfiedLinkError.class, CudaRuntime::ensureAvailability);
        assertSame(cause, e.getCause());
        assertEquals(0, CudaRuntime.deviceCountIfAvailable());
        assertThrows(UnsatisfiedLinkError.class, () -> new CudaDevice(0));
        try (Device d = Devices.open()) {
            assertInstanceOf(HostDevice.class, d);
        }
    }

    @Test
    void withAUsableGpuDevicesOpenPicksCuda() {
        assumeTrue(CudaRuntime.isAvailable(), "no usable GPU here: " + CudaRuntime.unavailabilityCause());
        try (Device d = Devices.open()) {
            assertInstanceOf(CudaDevice.class, d);
        }
    }

    @Test
    void providerReportsTheSameCause() {
        CudaDeviceProvider p = new CudaDeviceProvider();
        assertEquals("cuda", p.name());
        assertEquals(CudaRuntime.unavailabilityCause(), p.unavailabilityCause().orElse(null));
    }

    @Test
    void theSwitchForcesTheHostDeviceWithoutLoadingCuda() {
        try (ChildJvm child = ChildJvm.start(DeviceChoiceProcess.class,
                List.of("-D" + CudaRuntime.ENABLED_PROPERTY + "=false"))) {
            String line = child.awaitLine("DEVICE ", Duration.ofSeconds(60));
            assertEquals("DEVICE host CAUSE java.lang.IllegalStateException: disabled by -Dkvmarket.cuda=false", line);
        }
    }
}
