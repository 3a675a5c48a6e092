package io.kvmarket.transfer.rdma;

import io.kvmarket.device.Device;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.testkit.DeviceBytes;
import io.kvmarket.transfer.Transport;
import io.kvmarket.transfer.tcp.ClusterSecret;
import io.kvmarket.transfer.tcp.TcpConfig;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

/**
 * The transport contract over RDMA verbs, the real shim and binding over the fake provider: an exporter's node
 * serving its pool for remote READ, another node's importer pulling by RDMA READ.
 */
class RdmaTransportContractTest extends io.kvmarket.testkit.TransportContractTest {

    static final ClusterSecret SECRET = ClusterSecret.of("rdma-contract-cluster-secret".getBytes(StandardCharsets.UTF_8));

    @TempDir
    Path exporterDir;
    @TempDir
    Path importerDir;
    private HostDevice exporter;
    private HostDevice importer;

    @BeforeAll
    static void verbs() {
        FakeVerbs.require();
    }

    static RdmaConfig serving() {
        return RdmaConfig.of(TcpConfig.of(SECRET).withBind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0)));
    }

    static RdmaConfig importing() {
        return RdmaConfig.of(TcpConfig.of(SECRET).withBind(null));
    }

    static RdmaTransport open(Device device, long node, RdmaConfig config) {
        try {
            return RdmaTransport.open(device, node, config);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
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
        return open(exporter, 1, serving());
    }

    @Override
    protected Transport importerTransport(Device importer) {
        return open(importer, 2, importing());
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
