package io.kvmarket.device;

import io.kvmarket.device.host.HostDevice;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertInstanceOf;

class DevicesTest {

    @Test
    void withoutAGpuModuleTheHostDeviceIsUsed() {
        try (Device d = Devices.open()) {
            assertInstanceOf(HostDevice.class, d);
        }
    }
}
