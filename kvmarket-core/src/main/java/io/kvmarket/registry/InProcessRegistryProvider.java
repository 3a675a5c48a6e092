package io.kvmarket.registry;

import java.util.Optional;

/** The in-process registry: always available, the narrowest scope. Each open() is a new, empty registry. */
public final class InProcessRegistryProvider implements RegistryProvider {

    @Override
    public String name() {
        return "in-process";
    }

    @Override
    public RegistryScope scope() {
        return RegistryScope.PROCESS;
    }

    @Override
    public Optional<Throwable> unavailabilityCause() {
        return Optional.empty();
    }

    @Override
    public OfferRegistry open() {
        return new InProcessRegistry();
    }
}
