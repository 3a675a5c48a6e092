package io.kvmarket;

import io.kvmarket.device.host.HostDevice;
import io.kvmarket.kv.PagedKvCache;
import io.kvmarket.registry.shm.NodeLocalRegistry;
import io.kvmarket.testkit.KvFixture;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;

import static io.kvmarket.testkit.KvFixture.LAYOUT;
import static io.kvmarket.testkit.KvFixture.NS;
import static org.junit.jupiter.api.Assertions.assertEquals;

class LeaseRenewalTest {

    @TempDir
    Path dir;

    @Test
    void liveExporterKeepsItsShortLeasedOffersServed() throws Exception {
        try (NodeLocalRegistry registry = NodeLocalRegistry.open(dir, 1024);
             HostDevice device = new HostDevice(dir)) {
            PagedKvCache cache = new PagedKvCache(device.allocate(PagedKvCache.requiredBytes(LAYOUT, 8)), LAYOUT, 8);
            int[] t = KvFixture.tokens(64, 1);
            try (KvMarketplace market = KvMarketplace.builder().namespace(NS).kvCache(cache).device(device)
                    .registry(registry).chunkTokens(32).offerLeaseMillis(1000).build()) {
                market.export(t, 64, new int[] {0, 1, 2, 3});
                Thread.sleep(2500);
                Match m = market.match(t, 64);
                assertEquals(64, m.tokens(), "renewed every third of the lease");
                market.release(m);
            }
            assertEquals(0, registry.liveSlots(), "close withdraws");
        }
    }
}
