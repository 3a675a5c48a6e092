package io.kvmarket.device;

import io.kvmarket.device.mock.MockDevice;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertInstanceOf;

class DevicesTest {

    @Test
    void withoutAGpuModuleTheMockDeviceIsUsed() {
        try (Device d = Devices.open()) {
            assertInstanceOf(MockDevice.class, d);
        }
    }
}
