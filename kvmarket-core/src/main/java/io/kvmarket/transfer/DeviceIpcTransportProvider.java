package io.kvmarket.transfer;

import io.kvmarket.device.Device;

import java.util.Optional;

/** The device IPC transport: always available, since every device exports IPC handles. */
public final class DeviceIpcTransportProvider implements TransportProvider {

    @Override
    public String name() {
        return "device-ipc";
    }

    @Override
    public Optional<Throwable> unavailabilityCause() {
        return Optional.empty();
    }

    @Override
    public Transport open(Device device, long nodeId, long idleMillis) {
        return new DeviceIpcTransport(device, nodeId, idleMillis);
    }
}
