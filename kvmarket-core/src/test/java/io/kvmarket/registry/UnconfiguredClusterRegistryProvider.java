package io.kvmarket.registry;

import java.util.Optional;

/** A cluster registry on the test class path that is not configured, as a Redis registry without an address is. */
public final class UnconfiguredClusterRegistryProvider implements RegistryProvider {

    @Override
    public String name() {
        return "test-cluster";
    }

    @Override
    public RegistryScope scope() {
        return RegistryScope.CLUSTER;
    }

    @Override
    public Optional<Throwable> unavailabilityCause() {
        return Optional.of(new IllegalStateException("no cluster address configured"));
    }

    @Override
    public OfferRegistry open() {
        throw new AssertionError("an unavailable provider was opened");
    }
}
