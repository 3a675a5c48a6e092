package io.kvmarket.transfer.tcp;

import io.kvmarket.device.Device;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.testkit.DeviceBytes;
import io.kvmarket.transfer.Transport;
import org.junit.jupiter.api.io.TempDir;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

/** The transport contract over TCP on loopback: an exporter's node serving, another node's importer pulling. */
class TcpTransportContractTest extends io.kvmarket.testkit.TransportContractTest {

    static final ClusterSecret SECRET = ClusterSecret.of("contract-test-cluster-secret".getBytes(StandardCharsets.UTF_8));

    @TempDir
    Path exporterDir;
    @TempDir
    Path importerDir;
    private HostDevice exporter;
    private HostDevice importer;

    static TcpConfig serving() {
        return TcpConfig.of(SECRET).withBind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0));
    }

    static TcpConfig fetchingOnly() {
        return TcpConfig.of(SECRET).withBind(null);
    }

    @Override
    protected Device exporterDevice() {
        exporter = new HostDevice(exporterDir);
        return exporter;
    }

    @Override
    protected Device importerDevice() {
        importer = new HostDevice(importerDir);
        return importer;
    }

    @Override
    protected DeviceBytes bytes() {
        return DeviceBytes.HOST;
    }

    @Override
    protected Transport exporterTransport(Device exporter) {
        return TcpTransport.open(exporter, 1, serving());
    }

    @Override
    protected Transport importerTransport(Device importer) {
        return TcpTransport.open(importer, 2, fetchingOnly());
    }

    @Override
    protected long exporterNodeId() {
        return 1;
    }

    @Override
    protected void closeDevices() {
        importer.close();
        exporter.close();
    }
}
