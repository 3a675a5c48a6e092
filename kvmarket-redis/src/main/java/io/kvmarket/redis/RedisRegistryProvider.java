package io.kvmarket.redis;

import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.registry.RegistryProvider;
import io.kvmarket.registry.RegistryScope;

import java.util.Optional;

/**
 * The cluster registry, available once Redis is configured: {@code -Dkvmarket.redis.uri=redis://host:6379} or
 * {@code KVMARKET_REDIS_URI}. With it on the class path and configured, marketplaces built without a registry use it.
 */
public final class RedisRegistryProvider implements RegistryProvider {

    public static final String URI_PROPERTY = "kvmarket.redis.uri";

    @Override
    public String name() {
        return "redis";
    }

    @Override
    public RegistryScope scope() {
        return RegistryScope.CLUSTER;
    }

    @Override
    public Optional<Throwable> unavailabilityCause() {
        return uri() == null ? Optional.of(new IllegalStateException("no Redis configured (-D" + URI_PROPERTY
                + " or KVMARKET_REDIS_URI)")) : Optional.empty();
    }

    @Override
    public OfferRegistry open() {
        return RedisRegistry.open(uri());
    }

    private static String uri() {
        String configured = System.getProperty(URI_PROPERTY, System.getenv("KVMARKET_REDIS_URI"));
        return configured == null || configured.isBlank() ? null : configured.trim();
    }
}
