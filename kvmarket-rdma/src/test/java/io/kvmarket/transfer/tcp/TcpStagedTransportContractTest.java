package io.kvmarket.transfer.tcp;

import io.kvmarket.device.Device;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.testkit.DeviceBytes;
import io.kvmarket.testkit.TransportContractTest;
import io.kvmarket.transfer.Transport;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * The transport contract over TCP between devices whose memory the JVM cannot read (as a GPU's): every byte goes
 * through the staging rings on both sides, rings of two 4 KiB slots, so chunks cross many windows and concurrent
 * fetches wait for slots; the rings are freed with the transports.
 */
class TcpStagedTransportContractTest extends TransportContractTest {

    @TempDir
    Path exporterDir;
    @TempDir
    Path importerDir;
    private OpaqueDevice exporter;
    private OpaqueDevice importer;

    @Override
    protected Device exporterDevice() {
        exporter = new OpaqueDevice(new HostDevice(exporterDir));
        return exporter;
    }

    @Override
    protected Device importerDevice() {
        importer = new OpaqueDevice(new HostDevice(importerDir));
        return importer;
    }

    @Override
    protected DeviceBytes bytes() {
        return DeviceBytes.HOST;
    }

    @Override
    protected Transport exporterTransport(Device exporter) {
        return TcpTransport.open(exporter, 1, TcpTransportContractTest.serving().withStaging(2, 4096));
    }

    @Override
    protected Transport importerTransport(Device importer) {
        return TcpTransport.open(importer, 2, TcpTransportContractTest.fetchingOnly().withStaging(2, 4096));
    }

    @Override
    protected long exporterNodeId() {
        return 1;
    }

    @Override
    protected void closeDevices() {
        assertEquals(0, importer.stagingBuffers(), "the importer's staging ring outlived its transport");
        assertEquals(0, exporter.stagingBuffers(), "the exporter's staging ring outlived its transport");
        importer.close();
        exporter.close();
    }
}
