package io.kvmarket;

import io.kvmarket.key.Namespace;
import io.kvmarket.kv.DType;
import io.kvmarket.kv.KvLayout;
import io.kvmarket.kv.LayoutOrder;
import io.kvmarket.registry.InProcessRegistry;
import io.kvmarket.testkit.DeviceBytes;
import io.kvmarket.testkit.FaultyTransport;
import io.kvmarket.testkit.KvFixture;
import io.kvmarket.transfer.Locality;
import io.kvmarket.transfer.Route;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;

import static io.kvmarket.testkit.KvFixture.scattered;
import static io.kvmarket.testkit.KvFixture.tokens;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

/** An import is planned only for the prefix that moves faster than the engine would recompute it. */
class CostAwareImportTest {

    @TempDir
    Path dir;

    private KvFixture importer(InProcessRegistry registry, Namespace ns, FaultyTransport[] wrapped, PrefillCost cost) {
        return new KvFixture(new io.kvmarket.device.host.HostDevice(dir), DeviceBytes.HOST, true, registry, ns,
                t -> wrapped[0] = new FaultyTransport(t),
                b -> b.poolBytes(2 * KvFixture.chunkBytes(ns.layout(), KvFixture.CHUNK)).prefillCost(cost));
    }

    @Test
    void aLinkSlowerThanThePrefillIsDeclinedWithItsReason() {
        FaultyTransport[] wrapped = new FaultyTransport[1];
        try (InProcessRegistry registry = new InProcessRegistry(); KvFixture a = new KvFixture(dir, registry, 4);
             KvFixture b = importer(registry, KvFixture.NS, wrapped, PrefillCost.tokensPerSecond(1e6))) {
            int[] t = tokens(64, 1);
            a.fill(scattered(4, 1), 4, 1);
            a.market.export(t, 64, scattered(4, 1));
            wrapped[0].routeAs = r -> new Route(Locality.OTHER_NODE, 0, 1e-6); // 1 KB/s, 32 us per token to prefill
            Match m = b.market.match(t, 64);
            assertEquals(0, m.tokens());
            assertEquals(MissReason.SLOWER_THAN_PREFILL, m.reason());
            assertEquals(1L, b.market.metrics().snapshot().missesByReason().get(MissReason.SLOWER_THAN_PREFILL));
            b.market.release(m);
        }
    }

    @Test
    void aLinkFasterThanThePrefillImportsEveryChunk() {
        FaultyTransport[] wrapped = new FaultyTransport[1];
        try (InProcessRegistry registry = new InProcessRegistry(); KvFixture a = new KvFixture(dir, registry, 4);
             KvFixture b = importer(registry, KvFixture.NS, wrapped, PrefillCost.tokensPerSecond(100))) {
            int[] t = tokens(64, 2);
            int[] src = scattered(4, 2);
            a.fill(src, 4, 2);
            a.market.export(t, 64, src);
            Match m = b.market.match(t, 64);
            assertEquals(64, m.tokens());
            int[] dst = scattered(4, 3);
            assertEquals(64, b.market.load(m, dst).join().tokensImported());
            assertArrayEquals(a.kvBytes(src, 4), b.kvBytes(dst, 4));
        }
    }

    @Test
    void aLinkSlowerThanItsRouteClaimsIsLearnedAndLaterImportsAreDeclined() {
        // Big chunks (512 KiB), so fetches are large enough to learn throughput from.
        KvLayout big = KvLayout.of(4, 8, 64, DType.FLOAT32, 16, LayoutOrder.LAYER_MAJOR);
        Namespace ns = Namespace.of("cost-model", "rev1", "ids", big);
        FaultyTransport[] wrapped = new FaultyTransport[1];
        try (InProcessRegistry registry = new InProcessRegistry();
             KvFixture a = new KvFixture(dir, registry, 4, ns, t -> t);
             KvFixture b = importer(registry, ns, wrapped, PrefillCost.tokensPerSecond(10_000))) {
            int[] t = tokens(64, 4);
            int[] src = scattered(4, 4);
            a.fill(src, 4, 4);
            a.market.export(t, 64, src);
            wrapped[0].beforeFetch = o -> {
                try {
                    Thread.sleep(50); // 1 MiB in 50 ms: 21 MB/s, where the route claims 100 GB/s
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            };
            Match first = b.market.match(t, 64);
            assertEquals(64, first.tokens(), "planned by the route's own estimate");
            assertEquals(64, b.market.load(first, scattered(4, 5)).join().tokensImported());
            Match second = b.market.match(t, 64);
            assertEquals(0, second.tokens(), "6.4 ms to prefill, about 50 ms to move, as the last fetch showed");
            assertEquals(MissReason.SLOWER_THAN_PREFILL, second.reason());
            b.market.release(second);
        }
    }
}
