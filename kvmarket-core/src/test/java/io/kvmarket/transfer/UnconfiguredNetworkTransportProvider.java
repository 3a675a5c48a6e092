package io.kvmarket.transfer;

import io.kvmarket.device.Device;

import java.util.Optional;

/** A network transport on the test class path without configuration, as TCP without a cluster secret is. */
public final class UnconfiguredNetworkTransportProvider implements TransportProvider {

    @Override
    public String name() {
        return "test-network";
    }

    @Override
    public Optional<Throwable> unavailabilityCause() {
        return Optional.of(new IllegalStateException("no cluster secret configured"));
    }

    @Override
    public Transport open(Device device, long nodeId, long idleMillis) {
        throw new AssertionError("an unavailable provider was opened");
    }
}
