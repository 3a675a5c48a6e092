package io.kvmarket.nvlink;

import io.kvmarket.device.Device;
import io.kvmarket.testkit.DeviceBytes;
import io.kvmarket.testkit.DeviceIpcTransportContractTest;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The transport contract for {@code DeviceIpcTransport} over CUDA devices on GPU 0; runs only where CUDA is usable.
 * Two JVMs through CUDA IPC are {@link CudaIpcImportTest}'s subject.
 */
class CudaIpcTransportContractTest extends DeviceIpcTransportContractTest {

    private CudaDevice exporter;
    private CudaDevice importer;

    @Override
    protected Device exporterDevice() {
        assumeTrue(CudaRuntime.isAvailable(), () -> "no usable GPU: " + CudaRuntime.unavailabilityCause());
        exporter = new CudaDevice(0);
        return exporter;
    }

    @Override
    protected Device importerDevice() {
        importer = new CudaDevice(0);
        return importer;
    }

    @Override
    protected DeviceBytes bytes() {
        return GpuKv.CUDA;
    }

    @Override
    protected void closeDevices() {
        if (importer != null) {
            importer.close();
        }
        if (exporter != null) {
            exporter.close();
        }
    }
}
