package io.kvmarket.transfer;

import io.kvmarket.device.Device;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.testkit.DeviceBytes;
import io.kvmarket.testkit.DeviceIpcTransportContractTest;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;

/**
 * The transport contract for {@code DeviceIpcTransport} over the host device's shared memory: from another device
 * (as from another process: the exporter's memory is mapped from its file), and from the importer's own device (an
 * engine importing from its own pool).
 */
class HostIpcTransportContractTest {

    abstract static class OverHostDevice extends DeviceIpcTransportContractTest {
        @TempDir
        Path dir;
        HostDevice exporter;
        HostDevice importer;

        @Override
        protected Device exporterDevice() {
            exporter = new HostDevice(dir);
            return exporter;
        }

        @Override
        protected DeviceBytes bytes() {
            return DeviceBytes.HOST;
        }

        @Override
        protected void closeDevices() {
            importer.close();
            if (exporter != importer) {
                exporter.close();
            }
        }
    }

    @Nested
    class FromAnotherDevice extends OverHostDevice {
        @Override
        protected Device importerDevice() {
            importer = new HostDevice(dir);
            return importer;
        }
    }

    @Nested
    class FromItsOwnDevice extends OverHostDevice {
        @Override
        protected Device importerDevice() {
            importer = exporter;
            return importer;
        }
    }
}
