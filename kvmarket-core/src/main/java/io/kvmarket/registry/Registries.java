package io.kvmarket.registry;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Optional;
import java.util.ServiceLoader;

/**
 * Picks the default registry: the available {@link RegistryProvider} on the class path with the widest scope
 * (cluster, then node, then process), with one log line saying why each wider one was passed over. The builder
 * of a marketplace uses it unless it is given a registry.
 */
public final class Registries {

    private static final Logger LOG = LoggerFactory.getLogger(Registries.class);

    private Registries() {
    }

    /** Every provider on the class path, widest scope first. */
    public static List<RegistryProvider> providers() {
        List<RegistryProvider> out = new ArrayList<>();
        ServiceLoader.load(RegistryProvider.class, Registries.class.getClassLoader()).forEach(out::add);
        out.sort(Comparator.comparing(RegistryProvider::scope).reversed());
        return out;
    }

    /** The available provider of the widest scope. */
    public static RegistryProvider widestAvailable() {
        List<String> passedOver = new ArrayList<>();
        for (RegistryProvider p : providers()) {
            Optional<Throwable> cause = p.unavailabilityCause();
            if (cause.isEmpty()) {
                if (!passedOver.isEmpty()) {
                    LOG.info("using the {} registry ({})", p.name(), String.join("; ", passedOver));
                }
                return p;
            }
            passedOver.add(p.name() + " unavailable: " + cause.get().getMessage());
        }
        throw new IllegalStateException("no registry available: " + String.join("; ", passedOver));
    }

    /** Opens the available registry of the widest scope. */
    public static OfferRegistry open() {
        return widestAvailable().open();
    }
}
