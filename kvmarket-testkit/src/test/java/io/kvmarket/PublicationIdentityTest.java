package io.kvmarket;

import io.kvmarket.device.host.HostBuffer;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.kv.PagedKvCache;
import io.kvmarket.node.NodeDirectory;
import io.kvmarket.registry.InProcessRegistry;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.registry.shm.NodeLocalRegistry;
import io.kvmarket.transfer.DeviceIpcTransport;
import io.kvmarket.testkit.KvFixture;
import io.kvmarket.testkit.FaultyTransport;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.List;

import static io.kvmarket.testkit.KvFixture.BLOCKS;
import static io.kvmarket.testkit.KvFixture.CHUNK;
import static io.kvmarket.testkit.KvFixture.LAYOUT;
import static io.kvmarket.testkit.KvFixture.NS;
import static io.kvmarket.testkit.KvFixture.tokens;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * Several marketplaces in one process share an owner identity, so what tells their publications apart must be
 * unique per process, not per pool: otherwise one pool's reuse of memory can pass the check after the copy as
 * another pool's republication of the same key.
 */
class PublicationIdentityTest {

    @TempDir
    Path dir;

    @ParameterizedTest
    @ValueSource(strings = {"in-process", "node-local"})
    void anotherPoolsRepublicationNeverPassesTheCheckOfReusedMemory(String kind) throws Exception {
        // Pools built in the same millisecond used to draw the same generations; build them back to back, often.
        for (int attempt = 0; attempt < 20; attempt++) {
            Path node = NodeDirectory.ensure(dir.resolve("n" + attempt));
            try (OfferRegistry registry = kind.equals("in-process") ? new InProcessRegistry()
                    : NodeLocalRegistry.open(node, 1024);
                 HostDevice device = new HostDevice(node)) {
                runScenario(device, registry);
            }
        }
    }

    private void runScenario(HostDevice device, OfferRegistry registry) throws Exception {
        PagedKvCache cacheA = cache(device);
        PagedKvCache cacheB = cache(device);
        PagedKvCache cacheC = cache(device);
        long chunkBytes = LAYOUT.blockBytes() * (CHUNK / LAYOUT.tokensPerBlock());
        FaultyTransport cTransport = new FaultyTransport(new DeviceIpcTransport(device));
        try (KvMarketplace a = market(cacheA, device, registry, chunkBytes).build();
             KvMarketplace b = market(cacheB, device, registry, chunkBytes).build();
             KvMarketplace c = market(cacheC, device, registry, chunkBytes).pinLeaseMillis(1)
                     .transports(List.of(cTransport)).build()) {
            int[] p1 = tokens(CHUNK, 1);
            int[] p2 = tokens(CHUNK, 2);
            int[] blocks = {0, 1};
            fill(cacheA, blocks, 1);
            fill(cacheB, blocks, 1);
            byte[] p1Bytes = bytes(cacheA, blocks);
            assertEquals(1, a.export(p1, CHUNK, blocks).chunksPublished());
            Match m = c.match(p1, CHUNK);
            assertEquals(CHUNK, m.tokens());
            cTransport.beforeFetch = o -> {
                sleep(5); // C's 1 ms pin lapses, as it would in a stalled copy
                fill(cacheA, blocks, 2);
                assertEquals(1, a.export(p2, CHUNK, blocks).chunksPublished(), "A's one-chunk pool evicts P1");
                assertEquals(1, b.export(p1, CHUNK, blocks).chunksPublished(), "B offers P1 again");
            };
            int[] dst = {5, 6};
            LoadResult r = c.load(m, dst).join();
            if (r.tokensImported() > 0) {
                assertArrayEquals(p1Bytes, bytes(cacheC, dst), "a hit delivered bytes other than P1's: " + r);
            }
            assertEquals(0, r.tokensImported(), "the copy read A's reused memory");
            assertEquals(MissReason.SOURCE_CHANGED, r.reason());
        }
    }

    private static KvMarketplace.Builder market(PagedKvCache cache, HostDevice device, OfferRegistry registry,
                                                long chunkBytes) {
        return KvMarketplace.builder().namespace(NS).kvCache(cache).device(device).registry(registry)
                .chunkTokens(CHUNK).poolBytes(chunkBytes);
    }

    private static PagedKvCache cache(HostDevice device) {
        return new PagedKvCache(device.allocate(PagedKvCache.requiredBytes(LAYOUT, BLOCKS)), LAYOUT, BLOCKS);
    }

    private static void fill(PagedKvCache cache, int[] blocks, int salt) {
        ByteBuffer mem = ((HostBuffer) cache.buffer()).memory();
        for (int i = 0; i < blocks.length; i++) {
            for (int r = 0; r < LAYOUT.regionsPerBlock(); r++) {
                int off = (int) cache.regionOffset(blocks[i], r);
                for (int x = 0; x < LAYOUT.regionBytes(); x++) {
                    mem.put(off + x, (byte) (salt * 131 + i * 31 + r * 7 + x));
                }
            }
        }
    }

    private static byte[] bytes(PagedKvCache cache, int[] blocks) {
        ByteBuffer mem = ((HostBuffer) cache.buffer()).memory();
        int regionBytes = (int) LAYOUT.regionBytes();
        byte[] out = new byte[blocks.length * LAYOUT.regionsPerBlock() * regionBytes];
        int p = 0;
        for (int block : blocks) {
            for (int r = 0; r < LAYOUT.regionsPerBlock(); r++) {
                mem.get((int) cache.regionOffset(block, r), out, p, regionBytes);
                p += regionBytes;
            }
        }
        return out;
    }

    private static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
