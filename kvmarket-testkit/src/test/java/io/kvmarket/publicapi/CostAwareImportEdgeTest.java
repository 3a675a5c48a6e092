package io.kvmarket.publicapi;

import io.kvmarket.KvMarketplace;
import io.kvmarket.Match;
import io.kvmarket.MissReason;
import io.kvmarket.PrefillCost;
import io.kvmarket.device.CopyBatch;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.key.Namespace;
import io.kvmarket.kv.DType;
import io.kvmarket.kv.KvLayout;
import io.kvmarket.kv.LayoutOrder;
import io.kvmarket.kv.PagedKvCache;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.InProcessRegistry;
import io.kvmarket.registry.Offer;
import io.kvmarket.testkit.DeviceBytes;
import io.kvmarket.testkit.FaultyTransport;
import io.kvmarket.testkit.KvFixture;
import io.kvmarket.transfer.DeviceIpcTransport;
import io.kvmarket.transfer.Route;
import io.kvmarket.transfer.ServedPool;
import io.kvmarket.transfer.Transport;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.function.Function;

import static io.kvmarket.testkit.KvFixture.scattered;
import static io.kvmarket.testkit.KvFixture.tokens;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.fail;

/** The cost-aware import at its edges: latency, stalls, absurd estimates, routes that vanish while it plans. */
@Timeout(60)
class CostAwareImportEdgeTest {

    @TempDir
    Path dir;

    /** 512 KiB chunks of 32 tokens: two chunks are 1 MiB, large enough to be learned from. */
    private static final KvLayout BIG = KvLayout.of(4, 8, 64, DType.FLOAT32, 16, LayoutOrder.LAYER_MAJOR);
    private static final Namespace BIG_NS = Namespace.of("probe-cost", "rev1", "ids", BIG);

    private KvFixture importer(InProcessRegistry registry, FaultyTransport[] wrapped, PrefillCost cost) {
        return new KvFixture(new HostDevice(dir), DeviceBytes.HOST, true, registry, BIG_NS,
                t -> wrapped[0] = new FaultyTransport(t),
                b -> b.poolBytes(2 * KvFixture.chunkBytes(BIG, KvFixture.CHUNK)).prefillCost(cost));
    }

    private static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /**
     * A link that behaves exactly as its route says (50 ms latency, 100 B/ns) is imported after its first fetch too:
     * the learned throughput already contains the latency, which the estimate must not add again (it once did, and
     * declined the same import).
     */
    @Test
    void aLinkThatKeepsItsRoutesPromiseIsStillImportedAfterOneFetch() {
        FaultyTransport[] wrapped = new FaultyTransport[1];
        PrefillCost cost = PrefillCost.tokensPerSecond(64 / 0.080); // 80 ms for the 64-token prompt
        try (InProcessRegistry registry = new InProcessRegistry();
             KvFixture a = new KvFixture(dir, registry, 4, BIG_NS, t -> t);
             KvFixture b = importer(registry, wrapped, cost)) {
            int[] t = tokens(64, 11);
            int[] src = scattered(4, 11);
            a.fill(src, 4, 11);
            assertEquals(2, a.market.export(t, 64, src).chunksPublished());
            wrapped[0].routeAs = r -> new Route(r.locality(), 50_000_000L, 100.0);
            wrapped[0].beforeFetch = o -> sleep(50); // the route's latency, for real
            Match first = b.market.match(t, 64);
            assertEquals(64, first.tokens(), "50 ms to move, 80 ms to prefill");
            long start = System.nanoTime();
            assertEquals(64, b.market.load(first, scattered(4, 12)).join().tokensImported());
            long tookMs = (System.nanoTime() - start) / 1_000_000;
            Match second = b.market.match(t, 64);
            b.market.release(second);
            assertEquals(64, second.tokens(), "the fetch took " + tookMs + " ms (< 80 ms prefill), as its route "
                    + "promised; yet the next identical import is " + second.reason());
        }
    }

    /**
     * One transient stall (a GC pause, a busy link) teaches the estimate a slow throughput and declines the next
     * imports, but the learned figure is forgotten after a few seconds, so the link is tried again on its route's
     * promise (it was once shunned for the marketplace's whole life).
     */
    @Test
    void oneTransientStallDoesNotShunAFastLinkForever() {
        FaultyTransport[] wrapped = new FaultyTransport[1];
        try (InProcessRegistry registry = new InProcessRegistry();
             KvFixture a = new KvFixture(dir, registry, 4, BIG_NS, t -> t);
             KvFixture b = importer(registry, wrapped, PrefillCost.tokensPerSecond(10_000))) {
            int[] t = tokens(64, 21);
            int[] src = scattered(4, 21);
            a.fill(src, 4, 21);
            a.market.export(t, 64, src);
            wrapped[0].beforeFetch = o -> sleep(60); // one stall
            Match first = b.market.match(t, 64);
            assertEquals(64, first.tokens());
            b.market.load(first, scattered(4, 22)).join();
            wrapped[0].beforeFetch = o -> { }; // the link is fast again (host memcpy of 1 MiB, well under 6.4 ms)
            int declined = 0;
            for (int i = 0; i < 200; i++) {
                Match m = b.market.match(t, 64);
                if (m.tokens() == 64) {
                    b.market.load(m, scattered(4, 23)).join();
                    return;
                }
                declined++;
                b.market.release(m);
                sleep(25);
            }
            fail("after one stall, " + declined + " imports over 5 s were all declined (SLOWER_THAN_PREFILL) "
                    + "and no fetch ever ran to learn that the link recovered");
        }
    }

    /** A transport wrapper whose route is scripted per offer. */
    static final class Scripted implements Transport {
        final Transport delegate;
        volatile Function<Offer, Optional<Route>> routeFn;

        Scripted(Transport delegate, Function<Offer, Optional<Route>> routeFn) {
            this.delegate = delegate;
            this.routeFn = routeFn;
        }

        @Override public String name() { return "scripted"; }
        @Override public int endpointKind() { return delegate.endpointKind(); }
        @Override public Optional<Endpoint> advertise(ServedPool b) { return delegate.advertise(b); }
        @Override public Optional<Route> route(Offer o) {
            return delegate.route(o).isEmpty() ? Optional.empty() : routeFn.apply(o);
        }
        @Override public CompletableFuture<Void> fetch(List<Offer> s, DeviceBuffer d, CopyBatch b) {
            return delegate.fetch(s, d, b);
        }
        @Override public void evictStale() { delegate.evictStale(); }
        @Override public void close() { }
    }

    private static boolean from(Offer o, KvFixture exporter) {
        byte[] mine = exporter.poolEndpoint().bytes();
        return o.endpoint(Endpoint.DEVICE_IPC).map(e -> Arrays.equals(e.bytes(), mine)).orElse(false);
    }

    /**
     * Two sources on two transports, each absurdly slow (an estimate near Long.MAX_VALUE each): the summed estimate
     * saturates instead of wrapping negative, so the prefix is not judged faster than a prefill.
     */
    @Test
    void twoHopelesslySlowSourcesAreNotSummedIntoAFastOne() {
        try (InProcessRegistry registry = new InProcessRegistry();
             KvFixture a = new KvFixture(dir, registry, 4);
             KvFixture b = new KvFixture(dir, registry, 4)) {
            int[] t = tokens(64, 31);
            int[] src = scattered(4, 31);
            a.fill(src, 4, 31);
            b.fill(src, 4, 31);
            assertEquals(1, a.market.export(t, 32, src).chunksPublished());
            assertEquals(1, b.market.export(t, 64, src).chunksPublished());

            HostDevice device = new HostDevice(dir);
            DeviceBuffer buffer = device.allocate(PagedKvCache.requiredBytes(KvFixture.LAYOUT, KvFixture.BLOCKS));
            PagedKvCache cache = new PagedKvCache(buffer, KvFixture.LAYOUT, KvFixture.BLOCKS);
            DeviceIpcTransport ipc = new DeviceIpcTransport(device);
            Route hopeless = new Route(io.kvmarket.transfer.Locality.OTHER_NODE, Long.MAX_VALUE / 2 + 1, 1.0);
            Scripted toA = new Scripted(ipc, o -> from(o, a) ? Optional.of(hopeless) : Optional.empty());
            Scripted toB = new Scripted(ipc, o -> from(o, b) ? Optional.of(hopeless) : Optional.empty());
            try (KvMarketplace c = KvMarketplace.builder().namespace(KvFixture.NS).kvCache(cache).device(device)
                    .registry(registry).chunkTokens(KvFixture.CHUNK).transports(List.of(toA, toB))
                    .poolBytes(2 * KvFixture.chunkBytes(KvFixture.LAYOUT, KvFixture.CHUNK))
                    .prefillCost(PrefillCost.tokensPerSecond(1_000)).build()) {
                Match m = c.match(t, 64);
                c.release(m);
                assertEquals(0, m.tokens(), "each source takes ~146 years to move; 64 ms to prefill; reason "
                        + m.reason());
            } finally {
                ipc.close();
                device.close();
            }
        }
    }

    /**
     * A route that goes away between match()'s calls (a link going down while it plans) is a miss with a prefill
     * cost as without one (it once threw a NullPointerException out of chunksWorthImporting).
     */
    @Test
    void aRouteThatVanishesWhileMatchPlansIsAMissNotAnException() {
        try (InProcessRegistry registry = new InProcessRegistry();
             KvFixture a = new KvFixture(dir, registry, 4)) {
            int[] t = tokens(32, 41);
            int[] src = scattered(2, 41);
            a.fill(src, 2, 41);
            a.market.export(t, 32, src);
            int[] calls = new int[1];
            Scripted[] s = new Scripted[1];
            try (KvFixture b = new KvFixture(new HostDevice(dir), DeviceBytes.HOST, true, registry, KvFixture.NS,
                    tr -> s[0] = new Scripted(tr, o -> calls[0]++ == 0
                            ? Optional.of(new Route(io.kvmarket.transfer.Locality.SAME_NODE, 0, 10.0))
                            : Optional.empty()),
                    bb -> bb.poolBytes(2 * KvFixture.chunkBytes(KvFixture.LAYOUT, KvFixture.CHUNK))
                            .prefillCost(PrefillCost.tokensPerSecond(1)))) {
                Match m;
                try {
                    m = b.market.match(t, 32);
                } catch (RuntimeException e) {
                    fail("match() threw " + e + " where the link went away during planning", e);
                    return;
                }
                b.market.release(m);
                assertNotEquals(MissReason.NONE, m.reason());
            }
        }
    }
}
