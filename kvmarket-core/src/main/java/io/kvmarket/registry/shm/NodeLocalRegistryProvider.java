package io.kvmarket.registry.shm;

import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.registry.RegistryProvider;
import io.kvmarket.registry.RegistryScope;

import java.util.Optional;

/**
 * The node-local registry in the node directory ({@link io.kvmarket.node.NodeDirectory}): always available, so
 * it is the default until a cluster registry is on the class path and configured. A node directory that is not the
 * user's own fails open() loudly rather than falling back.
 */
public final class NodeLocalRegistryProvider implements RegistryProvider {

    @Override
    public String name() {
        return "node-local";
    }

    @Override
    public RegistryScope scope() {
        return RegistryScope.NODE;
    }

    @Override
    public Optional<Throwable> unavailabilityCause() {
        return Optional.empty();
    }

    @Override
    public OfferRegistry open() {
        return NodeLocalRegistry.openDefault();
    }
}
