package io.kvmarket.registry;

import io.kvmarket.registry.shm.NodeLocalRegistry;
import org.junit.jupiter.api.Test;

import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;

class RegistriesTest {

    @Test
    void providersOnTheClassPathComeWidestScopeFirst() {
        List<String> names = Registries.providers().stream().map(RegistryProvider::name).toList();
        assertEquals(List.of("test-cluster", "node-local", "in-process"), names);
    }

    @Test
    void theDefaultIsTheWidestAvailableScopeAndAnUnavailableWiderOneIsPassedOver() {
        RegistryProvider chosen = Registries.widestAvailable();
        assertEquals(RegistryScope.NODE, chosen.scope());
        try (OfferRegistry r = Registries.open()) {
            assertInstanceOf(NodeLocalRegistry.class, r);
        }
    }
}
