package io.kvmarket;

import io.kvmarket.key.ChunkKey;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.shm.NodeLocalRegistry;
import io.kvmarket.testkit.KvFixture;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CyclicBarrier;

import static io.kvmarket.testkit.KvFixture.scattered;
import static io.kvmarket.testkit.KvFixture.tokens;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;

/**
 * Exports of prompts with gaps in what the registry offers: chunks offered elsewhere past a gap count as already
 * offered and cost no pool slot, and concurrent exports of one prompt publish each key once.
 */
@Timeout(120)
class ExportGapTest {

    @TempDir
    Path dir;

    /**
     * A offers an 8-chunk prompt with a gap at chunk 1. B, whose pool holds 2 chunks, exports the same prompt: only
     * chunk 1 is missing in the registry. Chunks 2..7 are offered by A, so they must count as already offered (as
     * the per-key lookup did before). Observed: B reserves slots for all 7 keys past the prefix, gets 2, and reports
     * the 5 it could not reserve as skipped for "pool full".
     */
    @Test
    void keysOfferedByAnotherMarketplacePastAGapCountAsAlreadyOfferedNotSkipped() {
        try (NodeLocalRegistry registry = NodeLocalRegistry.open(dir, 1024);
             KvFixture a = new KvFixture(dir, registry, 16);
             KvFixture b = new KvFixture(dir, registry, 2)) {
            int[] t = tokens(256, 50);
            int[] aBlocks = scattered(16, 50);
            a.fill(aBlocks, 16, 50);
            assertEquals(8, a.market.export(t, 256, aBlocks).chunksPublished());
            ChunkKey[] keys = a.market.hasher().keys(t, 256);
            registry.withdraw(registry.lookup(keys[1]));
            int[] bBlocks = scattered(16, 51);
            b.fill(bBlocks, 16, 50);
            ExportResult r = b.market.export(t, 256, bBlocks);
            assertEquals(new ExportResult(1, 7, 0, ""), r);
        }
    }

    /**
     * B's pool (2 chunks) holds B's own offers of prompt P. B then exports prompt Q, offered by A except for one gap
     * chunk. Only one slot is needed; the per-key lookup evicted one of P's chunks. Observed: reserve() is asked for
     * every key past the gap, evicting (withdrawing) BOTH of B's own P offers for copies that publish-if-absent then
     * throws away.
     */
    @Test
    void anExportPastAGapDoesNotEvictOwnOffersForChunksOfferedElsewhere() {
        try (NodeLocalRegistry registry = NodeLocalRegistry.open(dir, 1024);
             KvFixture a = new KvFixture(dir, registry, 16);
             KvFixture b = new KvFixture(dir, registry, 2)) {
            int[] p = tokens(64, 60);
            int[] pBlocks = scattered(4, 60);
            b.fill(pBlocks, 4, 60);
            assertEquals(2, b.market.export(p, 64, pBlocks).chunksPublished());
            ChunkKey[] pKeys = b.market.hasher().keys(p, 64);

            int[] q = tokens(128, 61);
            int[] aBlocks = scattered(8, 61);
            a.fill(aBlocks, 8, 61);
            assertEquals(4, a.market.export(q, 128, aBlocks).chunksPublished());
            ChunkKey[] qKeys = a.market.hasher().keys(q, 128);
            registry.withdraw(registry.lookup(qKeys[1]));

            int[] bBlocks = scattered(8, 62);
            b.fill(bBlocks, 8, 61);
            ExportResult r = b.market.export(q, 128, bBlocks);
            assertEquals(1, r.chunksPublished(), r.toString());
            assertEquals(1, registry.lookupPrefix(pKeys, 2).size(),
                    "B's own offer of P's root should survive: only one slot was needed ("
                            + b.market.pool().evictions() + " evictions)");
        }
    }

    /** Several marketplaces export the same gapped prompt at once: one offer per key, counts add up, no slot leaks. */
    @Test
    void concurrentExportsOfTheSamePromptPublishEachKeyOnceAndCountConsistently() throws Exception {
        for (int round = 0; round < 20; round++) {
            Path d = dir.resolve("r" + round);
            java.nio.file.Files.createDirectories(d, java.nio.file.attribute.PosixFilePermissions.asFileAttribute(
                    java.nio.file.attribute.PosixFilePermissions.fromString("rwx------")));
            try (NodeLocalRegistry registry = NodeLocalRegistry.open(d, 1024)) {
                List<KvFixture> fs = new ArrayList<>();
                try {
                    for (int i = 0; i < 4; i++) {
                        fs.add(new KvFixture(d, registry, 8));
                    }
                    int[] t = tokens(256, 70 + round);
                    ChunkKey[] keys = fs.get(0).market.hasher().keys(t, 256);
                    // A first export of half the prompt by fixture 0, then a gap.
                    int[] b0 = scattered(16, 1);
                    fs.get(0).fill(b0, 16, 70 + round);
                    fs.get(0).market.export(t, 256, b0);
                    registry.withdraw(registry.lookup(keys[2]));
                    registry.withdraw(registry.lookup(keys[5]));
                    CyclicBarrier go = new CyclicBarrier(fs.size());
                    List<CompletableFuture<ExportResult>> rs = new ArrayList<>();
                    for (int i = 0; i < fs.size(); i++) {
                        KvFixture f = fs.get(i);
                        int[] blocks = scattered(16, 100 + i);
                        f.fill(blocks, 16, 70 + round);
                        rs.add(CompletableFuture.supplyAsync(() -> {
                            try {
                                go.await();
                            } catch (Exception e) {
                                throw new RuntimeException(e);
                            }
                            return f.market.export(t, 256, blocks);
                        }));
                    }
                    int published = 0;
                    for (int i = 0; i < fs.size(); i++) {
                        ExportResult r = rs.get(i).join();
                        assertEquals(8, r.chunksPublished() + r.chunksAlreadyOffered() + r.chunksSkipped(), r.toString());
                        assertEquals(0, r.chunksSkipped(), r.toString());
                        published += r.chunksPublished();
                    }
                    assertEquals(2, published, "exactly the two gap chunks are published, once each");
                    assertEquals(8, registry.lookupPrefix(keys, 8).size());
                    Map<ChunkKey, Integer> owners = new HashMap<>();
                    int held = 0;
                    for (KvFixture f : fs) {
                        held += f.market.pool().publishedChunks();
                        for (Offer o : f.market.pool().publishedOffers()) {
                            owners.merge(o.key(), 1, Integer::sum);
                        }
                    }
                    // Every registry offer is backed by the pool that published it (no own offer lost).
                    for (ChunkKey k : keys) {
                        Offer o = registry.lookup(k);
                        assertNotNull(o);
                        boolean backed = false;
                        for (KvFixture f : fs) {
                            backed |= f.market.pool().publishedOffers().contains(o);
                        }
                        assertEquals(true, backed, "offer of " + k + " is held by no pool");
                    }
                } finally {
                    for (KvFixture f : fs) {
                        f.close();
                    }
                }
            }
        }
    }
}
