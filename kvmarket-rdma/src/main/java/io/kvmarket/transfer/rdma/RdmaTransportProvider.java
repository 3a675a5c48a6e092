package io.kvmarket.transfer.rdma;

import io.kvmarket.device.Device;
import io.kvmarket.transfer.Transport;
import io.kvmarket.transfer.TransportProvider;
import io.kvmarket.transfer.tcp.TcpConfig;
import io.kvmarket.transfer.tcp.TcpTransportProvider;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.Optional;

/**
 * Opens the RDMA transport where verbs work ({@link Verbs}) and a cluster secret is configured (the TCP transport's
 * settings: secret, advertised address, timeouts). Where verbs do not work, the marketplace passes it over with one
 * log line and imports across nodes go over TCP. Its own settings, each a system property or else an environment
 * variable:
 * <ul>
 *   <li>{@value Verbs#ENABLED}: {@code false} turns it off where it would work.</li>
 *   <li>{@value #BIND} / {@code KVMARKET_RDMA_BIND}: {@code host:port} of the control server members set up queue
 *       pairs through ({@code 0.0.0.0:0} by default), or {@code off} to import only.</li>
 *   <li>{@value #DEVICE} / {@code KVMARKET_RDMA_DEVICE}: the RDMA device ({@code mlx5_0}); the first with an ACTIVE
 *       port by default.</li>
 * </ul>
 */
public final class RdmaTransportProvider implements TransportProvider {

    public static final String BIND = "kvmarket.rdma.bind";
    public static final String DEVICE = "kvmarket.rdma.device";

    @Override
    public String name() {
        return "rdma";
    }

    @Override
    public Optional<Throwable> unavailabilityCause() {
        if (!Verbs.isAvailable()) {
            return Optional.of(Verbs.unavailabilityCause());
        }
        try {
            configFromEnvironment();
            return Optional.empty();
        } catch (RuntimeException e) {
            return Optional.of(e);
        }
    }

    @Override
    public Transport open(Device device, long nodeId, long idleMillis) {
        try {
            return RdmaTransport.open(device, nodeId, configFromEnvironment());
        } catch (IOException e) {
            throw new UncheckedIOException("RDMA control server: " + e.getMessage(), e);
        }
    }

    /**
     * @throws IllegalStateException    when no cluster secret is configured
     * @throws IllegalArgumentException when a setting is malformed, naming it
     */
    public static RdmaConfig configFromEnvironment() {
        TcpConfig control = TcpTransportProvider.configFromEnvironment();
        String bind = TcpTransportProvider.setting(BIND, "KVMARKET_RDMA_BIND");
        control = control.withBind(bind == null ? new java.net.InetSocketAddress(0)
                : bind.equalsIgnoreCase("off") ? null : TcpTransportProvider.hostPort(BIND, bind));
        RdmaConfig config = RdmaConfig.of(control);
        String device = TcpTransportProvider.setting(DEVICE, "KVMARKET_RDMA_DEVICE");
        return device == null ? config : config.withDevice(device, 0, -1);
    }
}
