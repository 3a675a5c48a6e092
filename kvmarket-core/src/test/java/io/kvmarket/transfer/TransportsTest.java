package io.kvmarket.transfer;

import io.kvmarket.device.host.HostDevice;
import io.kvmarket.node.NodeId;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;

class TransportsTest {

    @TempDir
    Path dir;

    @Test
    void everyAvailableProviderOpensOneTransportAndUnavailableOnesArePassedOver() {
        assertEquals(List.of("device-ipc", "test-network"),
                Transports.providers().stream().map(TransportProvider::name).sorted().toList());
        try (HostDevice device = new HostDevice(dir)) {
            List<Transport> opened = Transports.openAvailable(device, NodeId.local(), 1_000);
            assertEquals(1, opened.size());
            assertInstanceOf(DeviceIpcTransport.class, opened.get(0));
            opened.forEach(Transport::close);
        }
    }
}
