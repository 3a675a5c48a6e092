package io.kvmarket.publicapi;

import io.kvmarket.device.host.HostDevice;
import io.kvmarket.pool.ExportPool;
import io.kvmarket.registry.InProcessRegistry;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.registry.RegistryException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Proxy;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A full export pool asks its registry to withdraw the chunks it evicts together, one call for as many as it still
 * wants (a registry across the network answers them in one round trip), least recently used first; one that cannot
 * go is replaced by the next in a further call; a registry that fails keeps the memory.
 */
@Timeout(60)
class EvictionBatchTest {

    @TempDir
    Path dir;

    /** What the pool asked: "one" per single withdrawal, "batch N" per batch of N. */
    private final List<String> calls = new ArrayList<>();
    private boolean failing;

    private OfferRegistry counting(OfferRegistry real) {
        return (OfferRegistry) Proxy.newProxyInstance(OfferRegistry.class.getClassLoader(),
                new Class<?>[] {OfferRegistry.class}, (proxy, method, args) -> {
                    if (method.getName().equals("withdrawIfUnused")) {
                        calls.add(args[0] instanceof List<?> l ? "batch " + l.size() : "one");
                        if (failing) {
                            throw new RegistryException("registry down");
                        }
                    }
                    try {
                        return method.invoke(real, args);
                    } catch (InvocationTargetException e) {
                        throw e.getCause();
                    }
                });
    }

    private static List<Offer> fill(ExportPool pool, OfferRegistry registry, int chunks) {
        List<Offer> offers = new ArrayList<>();
        for (int i = 0; i < chunks; i++) {
            try (ExportPool.Reservation r = pool.reserve(1)) {
                Offer o = MisuseTest.offer(i + 1, r.offset(0));
                registry.publish(o);
                r.published(0, o);
                offers.add(o);
            }
        }
        return offers;
    }

    @Test
    void chunksEvictedTogetherAreWithdrawnInOneCall() {
        try (HostDevice device = new HostDevice(dir); InProcessRegistry real = new InProcessRegistry()) {
            OfferRegistry registry = counting(real);
            ExportPool pool = new ExportPool(device, registry, 4 * 64, 64);
            List<Offer> offers = fill(pool, registry, 4);
            try (ExportPool.Reservation r = pool.reserve(3)) {
                assertEquals(3, r.size());
            }
            assertEquals(List.of("batch 3"), calls);
            for (int i = 0; i < 4; i++) {
                assertEquals(i == 3, registry.isCurrent(offers.get(i)), "least recently used first: chunk " + i);
            }
            pool.close();
        }
    }

    @Test
    void aPinnedChunkIsPassedOverForTheNextInAFurtherCall() {
        try (HostDevice device = new HostDevice(dir); InProcessRegistry real = new InProcessRegistry()) {
            OfferRegistry registry = counting(real);
            ExportPool pool = new ExportPool(device, registry, 4 * 64, 64);
            List<Offer> offers = fill(pool, registry, 4);
            assertTrue(registry.pin(offers.get(0), 5_000));
            try (ExportPool.Reservation r = pool.reserve(2)) {
                assertEquals(2, r.size());
            }
            assertEquals(List.of("batch 2", "batch 1"), calls);
            assertTrue(registry.isCurrent(offers.get(0)), "pinned: an importer is copying it");
            assertFalse(registry.isCurrent(offers.get(1)));
            assertFalse(registry.isCurrent(offers.get(2)));
            assertTrue(registry.isCurrent(offers.get(3)));
            registry.unpin(offers.get(0));
            pool.close();
        }
    }

    @Test
    void aRegistryThatFailsKeepsTheMemoryAndTheOffers() {
        try (HostDevice device = new HostDevice(dir); InProcessRegistry real = new InProcessRegistry()) {
            OfferRegistry registry = counting(real);
            ExportPool pool = new ExportPool(device, registry, 2 * 64, 64);
            List<Offer> offers = fill(pool, registry, 2);
            failing = true;
            try (ExportPool.Reservation r = pool.reserve(2)) {
                assertEquals(0, r.size(), "nothing evicted whose offer may still be served");
            }
            failing = false;
            assertTrue(registry.isCurrent(offers.get(0)));
            assertTrue(registry.isCurrent(offers.get(1)));
            pool.close();
        }
    }
}
