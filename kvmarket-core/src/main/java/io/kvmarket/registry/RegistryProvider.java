package io.kvmarket.registry;

import java.util.Optional;

/**
 * A kind of registry a module brings, found through {@link java.util.ServiceLoader}: the core brings the
 * in-process and node-local ones, kvmarket-redis the cluster one. Availability is decided by the provider and kept
 * with its cause, like Netty's {@code Epoll}; {@link Registries#open()} picks the widest available scope.
 */
public interface RegistryProvider {

    /** Short name, e.g. {@code node-local}. */
    String name();

    RegistryScope scope();

    /** Empty when {@link #open()} can be called; otherwise why not (not configured, library missing). */
    Optional<Throwable> unavailabilityCause();

    /** Opens the registry with its configured defaults; only called when available. */
    OfferRegistry open();
}
