package io.kvmarket;

import io.kvmarket.registry.Endpoint;
import io.kvmarket.device.host.HostBuffer;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.key.PrefixHasher;
import io.kvmarket.node.NodeId;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.InProcessRegistry;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.registry.PublishOutcome;
import io.kvmarket.registry.RegistryException;
import io.kvmarket.registry.shm.NodeLocalRegistry;
import io.kvmarket.transfer.Transport;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import io.kvmarket.registry.Withdrawal;
import io.kvmarket.testkit.KvFixture;
import io.kvmarket.testkit.FaultyTransport;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.lang.reflect.Proxy;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.List;

import static io.kvmarket.testkit.KvFixture.CHUNK;
import static io.kvmarket.testkit.KvFixture.NS;
import static io.kvmarket.testkit.KvFixture.scattered;
import static io.kvmarket.testkit.KvFixture.tokens;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class MarketplaceTest {

    static final int BPC = CHUNK / KvFixture.LAYOUT.tokensPerBlock();

    @TempDir
    Path dir;
    NodeLocalRegistry registry;
    KvFixture a;
    FaultyTransport bTransport;
    KvFixture b;

    @BeforeEach
    void open() {
        registry = NodeLocalRegistry.open(dir, 1024);
        a = new KvFixture(dir, registry, 8);
        b = new KvFixture(dir, registry, 8, NS, t -> bTransport = new FaultyTransport(t));
    }

    @AfterEach
    void close() {
        b.close();
        a.close();
        registry.close();
    }

    /**
     * A's prompt with its second chunk withdrawn: B's export of the same prompt looks up the offered prefix once,
     * publishes the gap, and counts the chunks past it, which it copies but finds offered, as already offered.
     */
    @Test
    void anExportPastAGapInTheOfferedPrefixPublishesOnlyTheGap() {
        int[] t = tokens(128, 40);
        exportFromA(t, 128, 40);
        ChunkKey[] keys = a.market.hasher().keys(t, 128);
        registry.withdraw(registry.lookup(keys[1]));
        assertEquals(1, registry.lookupPrefix(keys, 4).size(), "the gap");
        int[] blocks = scattered(8, 41);
        b.fill(blocks, 8, 40);
        ExportResult r = b.market.export(t, 128, blocks);
        assertEquals(1, r.chunksPublished(), r.toString());
        assertEquals(3, r.chunksAlreadyOffered(), r.toString());
        assertEquals(0, r.chunksSkipped(), r.toString());
        assertEquals(4, registry.lookupPrefix(keys, 4).size(), "the whole prompt is offered again");
        assertEquals(1, b.market.pool().publishedChunks(), "B's pool keeps only the chunk it published");
    }

    /** A prefills {@code n} tokens into scattered blocks and exports them; returns A's block table. */
    int[] exportFromA(int[] tokens, int n, int salt) {
        int[] blocks = scattered((n + 15) / 16, salt);
        a.fill(blocks, blocks.length, salt);
        a.market.export(tokens, n, blocks);
        return blocks;
    }

    @Test
    void importDeliversExactlyTheExportedBytesIntoScatteredBlocks() {
        int[] t = tokens(128, 1);
        int[] aBlocks = exportFromA(t, 128, 1);
        Match m = b.market.match(t, 127);
        assertEquals(96, m.tokens(), "127 tokens hold three full chunks");
        int[] bBlocks = scattered(8, 99);
        LoadResult r = b.market.load(m, bBlocks).join();
        assertEquals(new LoadResult(96, 96, MissReason.NONE, "", "faulty-device-ipc"), r);
        assertArrayEquals(a.kvBytes(aBlocks, 6), b.kvBytes(bBlocks, 6));
        assertEquals(96, b.market.metrics().snapshot().tokensImported());
    }

    @Test
    void importFromOwnPoolWorksInOneProcessWithTheInProcessRegistry() {
        try (InProcessRegistry local = new InProcessRegistry(); KvFixture solo = new KvFixture(dir, local, 4)) {
            int[] t = tokens(64, 2);
            int[] src = scattered(4, 2);
            solo.fill(src, 4, 2);
            assertEquals(new ExportResult(2, 0, 0, ""), solo.market.export(t, 64, src));
            int[] dst = {60, 61, 62, 63};
            Match m = solo.market.match(t, 64);
            assertEquals(64, solo.market.load(m, dst).join().tokensImported());
            assertArrayEquals(solo.kvBytes(src, 4), solo.kvBytes(dst, 4));
        }
    }

    @Test
    void importStopsAtFirstMissingChunk() {
        int[] t = tokens(128, 3);
        exportFromA(t, 128, 3);
        ChunkKey[] keys = a.market.hasher().keys(t, 128);
        registry.withdraw(registry.lookup(keys[2]));
        Match m = b.market.match(t, 128);
        assertEquals(64, m.tokens());
        assertEquals(MissReason.NO_OFFER, m.reason());
        assertEquals(64, b.market.load(m, scattered(8, 5)).join().tokensImported());
    }

    @Test
    void chunkReusedDuringTheCopyIsDiscardedAndTheImportStaysPrefixClosed() {
        int[] t = tokens(128, 4);
        int[] aBlocks = exportFromA(t, 128, 4);
        ChunkKey[] keys = a.market.hasher().keys(t, 128);
        Match m = b.market.match(t, 128);
        assertEquals(128, m.tokens());
        Offer victim = registry.lookup(keys[1]);
        // Between match and copy, A's pool reuses chunk 1's memory: offer withdrawn first, then overwritten.
        bTransport.beforeFetch = o -> {
            registry.withdraw(victim);
            ByteBuffer pool = ((HostBuffer) a.market.pool().buffer()).memory();
            for (long i = victim.offset(); i < victim.offset() + victim.length(); i++) {
                pool.put((int) i, (byte) 0x5a);
            }
        };
        int[] bBlocks = scattered(8, 6);
        LoadResult r = b.market.load(m, bBlocks).join();
        assertEquals(32, r.tokensImported());
        assertEquals(MissReason.SOURCE_CHANGED, r.reason());
        assertArrayEquals(a.kvBytes(aBlocks, BPC), b.kvBytes(bBlocks, BPC));
        assertEquals(1L, b.market.metrics().snapshot().missesByReason().get(MissReason.SOURCE_CHANGED));
    }

    @Test
    void evictionWithdrawsOffersBeforeReusingPoolMemory() {
        try (KvFixture small = new KvFixture(dir, registry, 2)) {
            int[] t1 = tokens(64, 7);
            int[] t2 = tokens(64, 8);
            int[] blocks = scattered(4, 7);
            small.fill(blocks, 4, 7);
            assertEquals(2, small.market.export(t1, 64, blocks).chunksPublished());
            small.fill(blocks, 4, 8);
            assertEquals(2, small.market.export(t2, 64, blocks).chunksPublished());
            for (ChunkKey k : small.market.hasher().keys(t1, 64)) {
                assertNull(registry.lookup(k), "evicted chunk must no longer be offered");
            }
            Match m = b.market.match(t2, 64);
            int[] dst = scattered(4, 9);
            assertEquals(64, b.market.load(m, dst).join().tokensImported());
            assertArrayEquals(small.kvBytes(blocks, 4), b.kvBytes(dst, 4));
            assertEquals(2, small.market.pool().evictions());
        }
    }

    @Test
    void evictionTakesAPrefixTailBeforeItsRoot() {
        try (KvFixture small = new KvFixture(dir, registry, 3)) {
            int[] blocks = scattered(6, 3);
            int[] three = tokens(96, 12);
            small.market.export(three, 96, blocks);
            small.market.release(small.market.match(three, 96)); // a reuse of the whole prefix
            small.market.export(tokens(32, 13), 32, blocks); // needs one slot
            assertEquals(64, b.market.match(three, 96).tokens(),
                    "the tail went, the root and middle still import; evicting the root would strand both");
        }
    }

    @Test
    void extendingAnOfferedPrefixKeepsItsRootTheMostRecent() {
        try (KvFixture small = new KvFixture(dir, registry, 3)) {
            int[] blocks = scattered(6, 5);
            int[] three = tokens(96, 14);
            small.market.export(three, 32, blocks); // the root first, as a shorter earlier request would
            assertEquals(2, small.market.export(three, 96, blocks).chunksPublished());
            small.market.export(tokens(32, 15), 32, blocks); // needs one slot
            Match m = b.market.match(three, 96);
            assertEquals(64, m.tokens(), "the new tail went, not the root the extension was built on");
            b.market.release(m);
        }
    }

    @Test
    void everyChunkInDemandStillLeavesRoomByRecency() throws InterruptedException {
        try (KvFixture small = new KvFixture(dir, registry, 2)) {
            int[] blocks = scattered(2, 6);
            int[] p1 = tokens(32, 24);
            int[] p2 = tokens(32, 25);
            small.market.export(p1, 32, blocks);
            small.market.export(p2, 32, blocks);
            Thread.sleep(5);
            b.market.release(b.market.match(p1, 32));
            b.market.release(b.market.match(p2, 32));
            assertEquals(1, small.market.export(tokens(32, 26), 32, blocks).chunksPublished(),
                    "a pool where everything is in demand still evicts");
            Match first = b.market.match(p1, 32);
            Match second = b.market.match(p2, 32);
            assertEquals(0, first.tokens(), "the least recently used of the two went");
            assertEquals(32, second.tokens());
            b.market.release(first);
            b.market.release(second);
        }
    }

    @Test
    void chunkAnotherEngineImportsOutlivesOneNobodyImports() throws InterruptedException {
        try (KvFixture small = new KvFixture(dir, registry, 2)) {
            int[] blocks = scattered(2, 4);
            int[] p1 = tokens(32, 21);
            int[] p2 = tokens(32, 22);
            small.market.export(p1, 32, blocks);
            small.market.export(p2, 32, blocks); // p1 is the least recently used in the exporter's own order
            Thread.sleep(5); // the import comes strictly after the exporter's last use of p1 (ms clock)
            b.market.release(b.market.match(p1, 32));
            small.market.export(tokens(32, 23), 32, blocks); // needs one slot
            Match kept = b.market.match(p1, 32);
            Match evicted = b.market.match(p2, 32);
            assertEquals(32, kept.tokens(), "p1 is in demand elsewhere: the exporter keeps it");
            assertEquals(0, evicted.tokens(), "p2, which nobody imported, went instead");
            b.market.release(kept);
            b.market.release(evicted);
        }
    }

    @Test
    void poolFullOfPinnedChunksSkipsTheExportWithAReason() {
        try (KvFixture small = new KvFixture(dir, registry, 2)) {
            int[] blocks = scattered(4, 1);
            small.market.export(tokens(64, 10), 64, blocks);
            Match pinned = b.market.match(tokens(64, 10), 64);
            assertEquals(64, pinned.tokens());
            ExportResult skipped = small.market.export(tokens(64, 11), 64, blocks);
            assertEquals(0, skipped.chunksPublished());
            assertEquals(2, skipped.chunksSkipped());
            assertTrue(skipped.skipReason().contains("pool full"), skipped.skipReason());
            b.market.release(pinned);
            assertEquals(2, small.market.export(tokens(64, 11), 64, blocks).chunksPublished());
        }
    }

    @Test
    void loadReleasesItsPins() {
        int[] t = tokens(64, 12);
        exportFromA(t, 64, 12);
        Match m = b.market.match(t, 64);
        Offer first = registry.lookup(a.market.hasher().keys(t, 64)[0]);
        assertEquals(Withdrawal.PINNED, registry.withdrawIfUnused(first, Long.MAX_VALUE), "pinned by the match");
        b.market.load(m, scattered(4, 1)).join();
        assertEquals(Withdrawal.WITHDRAWN, registry.withdrawIfUnused(first, Long.MAX_VALUE));
    }

    @Test
    void alreadyOfferedChunksAreNotExportedTwice() {
        int[] t = tokens(96, 13);
        exportFromA(t, 64, 13);
        int[] blocks = scattered(6, 13);
        ExportResult r = b.market.export(t, 96, blocks);
        assertEquals(new ExportResult(1, 2, 0, ""), r);
    }

    @Test
    void tokensOffTheChunkGridUseOnlyFullChunks() {
        int[] t = tokens(100, 14);
        exportFromA(t, 100, 14);
        assertEquals(96, b.market.match(t, 100).tokens());
        Match tooShort = b.market.match(t, 31);
        assertEquals(0, tooShort.tokens());
        assertEquals(MissReason.PROMPT_TOO_SHORT, tooShort.reason());
    }

    @Test
    void otherTenantNeverMatches() {
        int[] t = tokens(64, 15);
        exportFromA(t, 64, 15);
        try (KvFixture tenant = new KvFixture(dir, registry, 2, NS.withTenantSalt("tenant-b"), x -> x)) {
            Match m = tenant.market.match(t, 64);
            assertEquals(0, m.tokens());
            assertEquals(MissReason.NO_OFFER, m.reason());
        }
    }

    /** Publishes a forged offer for the first chunk of {@code t}, as a misconfigured or malicious peer would. */
    Offer forge(int[] t, Endpoint endpoint, long offset, long length, long fingerprint) {
        ChunkKey key = b.market.hasher().keys(t, CHUNK)[0];
        Offer o = Offer.of(key, NodeId.local(), ProcessIdentity.current(), endpoint, offset, length, fingerprint, 1,
                System.currentTimeMillis() + 60_000);
        assertEquals(PublishOutcome.PUBLISHED, registry.publish(o));
        return o;
    }

    long chunkBytes() {
        return a.market.pool().chunkBytes();
    }

    long fingerprint() {
        return PrefixHasher.layoutFingerprint(KvFixture.LAYOUT);
    }

    @Test
    void layoutMismatchIsAMissWithReason() {
        int[] t = tokens(32, 16);
        forge(t, a.poolEndpoint(), 0, chunkBytes(), fingerprint() ^ 1);
        Match m = b.market.match(t, 32);
        assertEquals(0, m.tokens());
        assertEquals(MissReason.LAYOUT_MISMATCH, m.reason());
    }

    @Test
    void offerOfTheWrongSizeIsAMissWithReason() {
        int[] t = tokens(32, 17);
        forge(t, a.poolEndpoint(), 0, chunkBytes() - 4, fingerprint());
        assertEquals(MissReason.MALFORMED_OFFER, b.market.match(t, 32).reason());
    }

    @Test
    void offerWhoseSpanOverflowsIsAMissAndHoldsNoPin() {
        int[] t = tokens(32, 27);
        Offer forged = forge(t, a.poolEndpoint(), Long.MAX_VALUE - 100, chunkBytes(), fingerprint());
        Match m = b.market.match(t, 32);
        assertEquals(0, m.tokens());
        assertEquals(MissReason.MALFORMED_OFFER, m.reason());
        assertEquals(Withdrawal.WITHDRAWN, registry.withdrawIfUnused(forged, Long.MAX_VALUE), "no pin left behind");
    }

    @Test
    void exportWhoseCopyFailsReturnsItsPoolSlots() {
        io.kvmarket.device.Device failing = (io.kvmarket.device.Device) Proxy.newProxyInstance(
                getClass().getClassLoader(), new Class<?>[] {io.kvmarket.device.Device.class}, (proxy, method, args) -> {
                    if (method.getName().equals("copy")) {
                        throw new IllegalStateException("device lost (injected)");
                    }
                    try {
                        return method.invoke(a.device, args);
                    } catch (java.lang.reflect.InvocationTargetException e) {
                        throw e.getCause();
                    }
                });
        io.kvmarket.kv.PagedKvCache cache = new io.kvmarket.kv.PagedKvCache(failing.allocate(
                io.kvmarket.kv.PagedKvCache.requiredBytes(KvFixture.LAYOUT, 8)), KvFixture.LAYOUT, 8);
        try (KvMarketplace market = KvMarketplace.builder().namespace(NS).kvCache(cache).device(failing)
                .registry(registry).chunkTokens(CHUNK).poolBytes(2 * chunkBytes()).build()) {
            ExportResult r = market.export(tokens(64, 28), 64, new int[] {0, 1, 2, 3});
            assertEquals(0, r.chunksPublished());
            assertTrue(r.skipReason().contains("device lost"), r.skipReason());
            try (var reserved = market.pool().reserve(2)) {
                assertEquals(2, reserved.size(), "both slots came back");
            }
        }
    }

    @Test
    void malformedHandleInAnOfferIsAMissNotACrash() {
        int[] t = tokens(32, 18);
        byte[] junk = new byte[44];
        junk[0] = 1;
        forge(t, new Endpoint(Endpoint.DEVICE_IPC, junk), 0, chunkBytes(), fingerprint());
        Match m = b.market.match(t, 32);
        assertEquals(32, m.tokens());
        LoadResult r = b.market.load(m, scattered(2, 1)).join();
        assertEquals(0, r.tokensImported());
        assertEquals(MissReason.MALFORMED_OFFER, r.reason());
    }

    @Test
    void offerSpanOutsideItsSourceBufferIsAMiss() {
        int[] t = tokens(32, 19);
        forge(t, a.poolEndpoint(), a.market.pool().buffer().size() - 8, chunkBytes(), fingerprint());
        LoadResult r = b.market.load(b.market.match(t, 32), scattered(2, 1)).join();
        assertEquals(0, r.tokensImported());
        assertEquals(MissReason.MALFORMED_OFFER, r.reason());
    }

    @Test
    void freedSourceMemoryIsAPeerGoneMiss() {
        int[] t = tokens(32, 20);
        var gone = a.device.allocate(chunkBytes());
        byte[] handle = a.device.exportHandle(gone);
        a.device.free(gone);
        forge(t, new Endpoint(Endpoint.DEVICE_IPC, handle), 0, chunkBytes(), fingerprint());
        LoadResult r = b.market.load(b.market.match(t, 32), scattered(2, 1)).join();
        assertEquals(0, r.tokensImported());
        assertEquals(MissReason.PEER_GONE, r.reason());
    }

    @Test
    void registryDownIsAMissOnImportAndASkipOnExport() {
        OfferRegistry down = (OfferRegistry) Proxy.newProxyInstance(getClass().getClassLoader(),
                new Class<?>[] {OfferRegistry.class}, (proxy, method, args) -> {
                    if (method.getName().equals("close")) {
                        return null;
                    }
                    throw new RegistryException("registry down (injected)");
                });
        try (KvFixture broken = new KvFixture(dir, down, 2)) {
            int[] t = tokens(64, 21);
            Match m = broken.market.match(t, 64);
            assertEquals(0, m.tokens());
            assertEquals(MissReason.REGISTRY_UNAVAILABLE, m.reason());
            ExportResult e = broken.market.export(t, 64, scattered(4, 1));
            assertEquals(0, e.chunksPublished());
            assertEquals(2, e.chunksSkipped());
            assertTrue(e.skipReason().startsWith("registry unavailable"), e.skipReason());
        }
    }

    @Test
    void failedTransferIsAMissWithReason() {
        int[] t = tokens(64, 22);
        exportFromA(t, 64, 22);
        bTransport.beforeFetch = o -> {
            throw new io.kvmarket.transfer.TransferException(io.kvmarket.transfer.TransferFailure.SOURCE_GONE, "injected");
        };
        LoadResult r = b.market.load(b.market.match(t, 64), scattered(4, 1)).join();
        assertEquals(new LoadResult(0, 64, MissReason.PEER_GONE, "injected"), r);
    }

    @Test
    void badBlockTablesAreProgrammingErrors() {
        int[] t = tokens(64, 23);
        exportFromA(t, 64, 23);
        Match m = b.market.match(t, 64);
        assertThrows(IllegalArgumentException.class, () -> b.market.load(m, new int[3]));
        assertThrows(IllegalArgumentException.class, () -> b.market.load(m, new int[] {0, 1, 2, KvFixture.BLOCKS}));
        assertThrows(IllegalArgumentException.class, () -> b.market.load(m, new int[] {0, -1, 2, 3}));
        b.market.load(m, new int[] {0, 1, 2, 3}).join();
        assertThrows(IllegalStateException.class, () -> b.market.load(m, new int[] {0, 1, 2, 3}));
        assertThrows(IllegalArgumentException.class, () -> b.market.export(t, 64, new int[3]));
        assertThrows(IllegalArgumentException.class, () -> b.market.match(t, 65));
    }

    @Test
    void failedLoadLeavesThePoolAndRegistryIntact() {
        int[] t = tokens(64, 24);
        int[] aBlocks = exportFromA(t, 64, 24);
        Match m = b.market.match(t, 64);
        assertThrows(IllegalArgumentException.class, () -> b.market.load(m, new int[] {0, 1, 2, 99}));
        b.market.release(m);
        int[] dst = scattered(4, 3);
        assertEquals(64, b.market.load(b.market.match(t, 64), dst).join().tokensImported());
        assertArrayEquals(a.kvBytes(aBlocks, 4), b.kvBytes(dst, 4));
    }

    @Test
    void closingTheExporterWithdrawsItsOffers() {
        int[] t = tokens(64, 25);
        try (KvFixture leaving = new KvFixture(dir, registry, 2)) {
            leaving.market.export(t, 64, scattered(4, 1));
            assertEquals(64, b.market.match(t, 64).tokens());
        }
        Match after = b.market.match(t, 64);
        assertEquals(0, after.tokens());
        assertNotEquals(MissReason.NONE, after.reason());
        assertEquals(List.of(), registry.lookupPrefix(a.market.hasher().keys(t, 64), 2));
    }

    @Test
    void exportWithABlockOutsideTheCacheThrowsAndChangesNothing() {
        try (KvFixture small = new KvFixture(dir, registry, 2)) {
            int[] t = tokens(64, 30);
            int[] blocks = scattered(4, 30);
            small.fill(blocks, 4, 30);
            assertEquals(2, small.market.export(t, 64, blocks).chunksPublished());
            int[] other = tokens(64, 31);
            assertThrows(IllegalArgumentException.class, () -> small.market.export(other, 64, new int[] {0, 1, 2, -1}));
            assertThrows(IllegalArgumentException.class,
                    () -> small.market.export(other, 64, new int[] {0, 1, 2, KvFixture.BLOCKS}));
            assertEquals(2, small.market.pool().publishedChunks(), "the pool kept its chunks");
            Match m = b.market.match(t, 64);
            assertEquals(64, m.tokens(), "and the registry its offers");
            b.market.release(m);
            assertEquals(2, small.market.export(other, 64, blocks).chunksPublished(), "a valid export still works");
        }
    }

    @Test
    void leasesOutsideTheBuildersBoundsAreRejectedWithTheBounds() {
        KvMarketplace.Builder builder = KvMarketplace.builder();
        for (long bad : new long[] {0, -1, KvMarketplace.Builder.MAX_PIN_LEASE_MS + 1, Long.MAX_VALUE}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> builder.pinLeaseMillis(bad));
            assertTrue(e.getMessage().contains(String.valueOf(KvMarketplace.Builder.MAX_PIN_LEASE_MS)), e.getMessage());
        }
        for (long bad : new long[] {0, KvMarketplace.Builder.MIN_OFFER_LEASE_MS - 1,
                KvMarketplace.Builder.MAX_OFFER_LEASE_MS + 1, Long.MAX_VALUE}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> builder.offerLeaseMillis(bad));
            assertTrue(e.getMessage().contains(String.valueOf(KvMarketplace.Builder.MAX_OFFER_LEASE_MS)), e.getMessage());
        }
    }

    @Test
    void leasesAtTheBuildersBoundsWork() {
        long chunkBytes = chunkBytes();
        try (KvMarketplace longLeases = KvMarketplace.builder().namespace(NS).kvCache(a.cache).device(a.device)
                .registry(registry).chunkTokens(CHUNK).poolBytes(2 * chunkBytes)
                .pinLeaseMillis(KvMarketplace.Builder.MAX_PIN_LEASE_MS)
                .offerLeaseMillis(KvMarketplace.Builder.MAX_OFFER_LEASE_MS).build()) {
            int[] t = tokens(64, 32);
            assertEquals(2, longLeases.export(t, 64, scattered(4, 32)).chunksPublished());
            Match m = longLeases.match(t, 64);
            assertEquals(64, m.tokens(), "an offer with the longest lease is served");
            assertEquals(0, longLeases.export(tokens(64, 33), 64, scattered(4, 33)).chunksPublished(),
                    "the longest pins hold");
            longLeases.release(m);
        }
    }

    @Test
    void aMatchFromAnotherMarketplaceIsRejectedBeforeAnythingIsConsumed() {
        int[] t = tokens(64, 34);
        exportFromA(t, 64, 34);
        try (KvFixture tenant = new KvFixture(dir, registry, 2, NS.withTenantSalt("tenant-b"), x -> x)) {
            tenant.market.export(t, 64, scattered(4, 34));
            Match foreign = tenant.market.match(t, 64);
            assertEquals(64, foreign.tokens());
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> b.market.load(foreign, scattered(4, 35)));
            assertTrue(e.getMessage().contains("another marketplace"), e.getMessage());
            assertThrows(IllegalArgumentException.class, () -> b.market.release(foreign));
            assertEquals(64, tenant.market.load(foreign, scattered(4, 36)).join().tokensImported(),
                    "the match is still its own marketplace's to load");
        }
        Match own = b.market.match(t, 64);
        try (KvMarketplace otherChunks = KvMarketplace.builder().namespace(NS).kvCache(a.cache).device(a.device)
                .registry(registry).chunkTokens(16).poolBytes(chunkBytes()).build()) {
            assertThrows(IllegalArgumentException.class, () -> otherChunks.load(own, new int[] {0, 1, 2, 3}));
        }
        b.market.release(own);
        Offer first = registry.lookup(a.market.hasher().keys(t, 64)[0]);
        assertEquals(Withdrawal.WITHDRAWN, registry.withdrawIfUnused(first, Long.MAX_VALUE), "no pin left behind");
    }

    @Test
    void aPublishWhoseOutcomeIsUnknownIsWithdrawnBeforeItsMemoryIsReused() {
        InProcessRegistry inner = new InProcessRegistry();
        java.util.concurrent.atomic.AtomicBoolean failOnce = new java.util.concurrent.atomic.AtomicBoolean(true);
        // A remote registry whose write timed out but landed anyway: the caller sees an exception.
        OfferRegistry landsButThrows = (OfferRegistry) Proxy.newProxyInstance(getClass().getClassLoader(),
                new Class<?>[] {OfferRegistry.class}, (proxy, method, args) -> {
                    Object result;
                    try {
                        result = method.invoke(inner, args);
                    } catch (java.lang.reflect.InvocationTargetException e) {
                        throw e.getCause();
                    }
                    if ((method.getName().equals("publish") || method.getName().equals("publishAll"))
                            && failOnce.getAndSet(false)) {
                        throw new RegistryException("timed out (injected), yet the write landed");
                    }
                    return result;
                });
        try (KvFixture exporter = new KvFixture(dir, landsButThrows, 1); KvFixture importer = new KvFixture(dir, inner, 2)) {
            int[] p1 = tokens(32, 40);
            int[] blocks = scattered(2, 40);
            exporter.fill(blocks, 2, 40);
            byte[] p1Bytes = exporter.kvBytes(blocks, 2);
            ExportResult first = exporter.market.export(p1, 32, blocks);
            assertEquals(0, first.chunksPublished(), "reported as skipped: " + first);
            exporter.fill(blocks, 2, 41);
            exporter.market.export(tokens(32, 41), 32, blocks); // the one-chunk pool needs P1's memory
            Match m = importer.market.match(p1, 32);
            int[] dst = scattered(2, 42);
            LoadResult r = importer.market.load(m, dst).join();
            if (r.tokensImported() > 0) {
                assertArrayEquals(p1Bytes, importer.kvBytes(dst, 2), "P1 served over memory that holds P2: " + r);
            }
            assertNull(inner.lookup(importer.market.hasher().keys(p1, 32)[0]), "withdrawn before its memory was reused");
        }
    }

    @Test
    void transportsThatReachNothingGiveNoTransportMiss() {
        int[] t = tokens(32, 26);
        exportFromA(t, 32, 26);
        Transport nowhere = (Transport) Proxy.newProxyInstance(getClass().getClassLoader(),
                new Class<?>[] {Transport.class}, (proxy, method, args) -> switch (method.getName()) {
                    case "route", "advertise" -> java.util.Optional.empty();
                    case "endpointKind" -> Endpoint.TCP;
                    default -> null;
                });
        try (KvFixture isolated = new KvFixture(dir, registry, 2, NS, x -> nowhere)) {
            assertEquals(MissReason.NO_TRANSPORT, isolated.market.match(t, 32).reason());
            ExportResult e = isolated.market.export(tokens(32, 27), 32, scattered(2, 27));
            assertEquals(new ExportResult(0, 0, 1, "no transport advertises the export pool"), e);
        }
    }
}
