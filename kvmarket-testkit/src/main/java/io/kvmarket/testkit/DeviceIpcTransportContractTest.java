package io.kvmarket.testkit;

import io.kvmarket.device.Device;
import io.kvmarket.transfer.DeviceIpcTransport;
import io.kvmarket.transfer.Transport;

/**
 * The transport contract for {@link DeviceIpcTransport} on both sides; each device kind's test supplies its
 * devices and host access (the host device's shared memory, a CUDA GPU).
 */
public abstract class DeviceIpcTransportContractTest extends TransportContractTest {

    @Override
    protected Transport exporterTransport(Device exporter) {
        return new DeviceIpcTransport(exporter);
    }

    @Override
    protected Transport importerTransport(Device importer) {
        return new DeviceIpcTransport(importer);
    }
}
