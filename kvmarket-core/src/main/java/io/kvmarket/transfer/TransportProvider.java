package io.kvmarket.transfer;

import io.kvmarket.device.Device;

import java.util.Optional;

/**
 * A kind of transport a module brings, found through {@link java.util.ServiceLoader}: the core brings the device
 * IPC transport, kvmarket-rdma the network ones. Availability is decided by the provider and kept with its cause,
 * like Netty's {@code Epoll}; a marketplace built without explicit transports opens every available one.
 */
public interface TransportProvider {

    /** Short name, e.g. {@code device-ipc}. */
    String name();

    /** Empty when {@link #open} can be called; otherwise why not (not configured, no NIC, library missing). */
    Optional<Throwable> unavailabilityCause();

    /**
     * Opens the transport for an engine on {@code device}.
     *
     * @param idleMillis how long a transport may keep resources of a peer that nothing used (one offer lease)
     */
    Transport open(Device device, long nodeId, long idleMillis);
}
