package io.kvmarket;

import io.kvmarket.device.host.HostDevice;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.kv.PagedKvCache;
import io.kvmarket.registry.InProcessRegistry;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.shm.NodeLocalRegistry;
import io.kvmarket.testkit.KvFixture;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;

import static io.kvmarket.testkit.KvFixture.LAYOUT;
import static io.kvmarket.testkit.KvFixture.NS;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

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

    @Test
    void anOfferTheRegistryLostIsOfferedAgainWhileThePoolHoldsIt() {
        try (InProcessRegistry registry = new InProcessRegistry(); KvFixture a = new KvFixture(dir, registry, 2)) {
            int[] t = KvFixture.tokens(64, 2);
            int[] blocks = KvFixture.scattered(4, 2);
            a.fill(blocks, 4, 2);
            assertEquals(2, a.market.export(t, 64, blocks).chunksPublished());
            ChunkKey[] keys = a.market.hasher().keys(t, 64);
            Offer first = registry.lookup(keys[0]);
            registry.withdraw(first); // lost behind the pool's back, as a Redis restarted empty loses everything
            registry.withdraw(registry.lookup(keys[1]));
            assertNull(registry.lookup(keys[0]));
            a.market.housekeep();
            Offer again = registry.lookup(keys[0]);
            assertTrue(again != null && again.samePublication(first), "the same publication, offered again");
            assertEquals(2, registry.lookupPrefix(keys, 2).size());
        }
    }

    @Test
    void aChunkTheRegistryLostAndAnotherProcessNowOffersIsForgottenAndItsSlotFreed() {
        try (InProcessRegistry registry = new InProcessRegistry(); KvFixture a = new KvFixture(dir, registry, 2);
             KvFixture b = new KvFixture(dir, registry, 2)) {
            int[] t = KvFixture.tokens(32, 3);
            int[] blocks = KvFixture.scattered(2, 3);
            a.fill(blocks, 2, 3);
            b.fill(blocks, 2, 3);
            assertEquals(1, a.market.export(t, 32, blocks).chunksPublished());
            registry.withdraw(registry.lookup(a.market.hasher().keys(t, 32)[0]));
            assertEquals(1, b.market.export(t, 32, blocks).chunksPublished(), "b offers the key meanwhile");
            a.market.housekeep();
            assertEquals(0, a.market.pool().publishedChunks(), "a forgot its chunk");
            try (var reserved = a.market.pool().reserve(2)) {
                assertEquals(2, reserved.size(), "and its slot is free again");
            }
        }
    }

    @Test
    void republishingAPublicationTheRegistryStillHoldsKeepsIt() {
        try (InProcessRegistry registry = new InProcessRegistry(); KvFixture a = new KvFixture(dir, registry, 1)) {
            int[] t = KvFixture.tokens(32, 6);
            int[] blocks = KvFixture.scattered(2, 6);
            a.fill(blocks, 2, 6);
            a.market.export(t, 32, blocks);
            Offer held = registry.lookup(a.market.hasher().keys(t, 32)[0]);
            // As a racing export of the same pool does: the registry answers ALREADY_OFFERED with this very offer.
            assertTrue(a.market.pool().republish(held, registry.clockMillis() + 60_000));
            assertEquals(1, a.market.pool().publishedChunks(), "still held: its memory must not be freed");
            try (var reserved = a.market.pool().reserve(1)) {
                assertEquals(1, reserved.size());
                assertNull(registry.lookup(held.key()), "reused only after it was withdrawn");
            }
        }
    }

    @Test
    void anEvictedChunkIsNeverOfferedAgain() {
        try (InProcessRegistry registry = new InProcessRegistry(); KvFixture a = new KvFixture(dir, registry, 1)) {
            int[] p1 = KvFixture.tokens(32, 4);
            int[] blocks = KvFixture.scattered(2, 4);
            a.fill(blocks, 2, 4);
            a.market.export(p1, 32, blocks);
            Offer evicted = registry.lookup(a.market.hasher().keys(p1, 32)[0]);
            a.market.export(KvFixture.tokens(32, 5), 32, blocks); // the one-chunk pool evicts p1
            assertFalse(a.market.pool().republish(evicted, registry.clockMillis() + 60_000),
                    "a stale renewal must not offer memory that now holds another chunk");
            assertNull(registry.lookup(evicted.key()));
        }
    }
}
