package io.kvmarket.publicapi;

import io.kvmarket.ExportResult;
import io.kvmarket.LoadResult;
import io.kvmarket.Match;
import io.kvmarket.MissReason;
import io.kvmarket.device.CopyBatch;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.shm.NodeLocalRegistry;
import io.kvmarket.testkit.DeviceBytes;
import io.kvmarket.testkit.KvFixture;
import io.kvmarket.transfer.DeviceIpcTransport;
import io.kvmarket.transfer.Locality;
import io.kvmarket.transfer.Route;
import io.kvmarket.transfer.ServedPool;
import io.kvmarket.transfer.Transport;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Function;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/** User transports that misbehave at the edges of the SPI. */
@Timeout(60)
class TransportSpiTest {

    @TempDir
    Path dir;

    /** A transport delegating to device IPC with overridable advertise and route, counting fetches. */
    static class Custom implements Transport {
        final Transport delegate;
        final int kind;
        Function<ServedPool, Optional<Endpoint>> advertise;
        Function<Offer, Optional<Route>> route;
        final AtomicInteger fetches = new AtomicInteger();

        Custom(Transport delegate, int kind) {
            this.delegate = delegate;
            this.kind = kind;
            this.advertise = delegate::advertise;
            this.route = delegate::route;
        }

        @Override public String name() { return "custom-" + kind; }
        @Override public int endpointKind() { return kind; }
        @Override public Optional<Endpoint> advertise(ServedPool b) { return advertise.apply(b); }
        @Override public Optional<Route> route(Offer o) { return route.apply(o); }
        @Override public CompletableFuture<Void> fetch(List<Offer> s, DeviceBuffer d, CopyBatch b) {
            fetches.incrementAndGet();
            return delegate.fetch(s, d, b);
        }
        @Override public void evictStale() { delegate.evictStale(); }
        @Override public void close() { delegate.close(); }
    }

    static long memoryFiles(Path nodeDir) throws Exception {
        Path d = nodeDir.resolve("host-device");
        if (!Files.isDirectory(d)) {
            return 0;
        }
        try (Stream<Path> s = Files.list(d)) {
            return s.filter(p -> p.toString().endsWith(".kvmem")).count();
        }
    }

    /** advertise() throwing at build time: the builder must not keep the pool it allocated. */
    @Test
    void aTransportThatThrowsFromAdvertiseLeaksNoPool() throws Exception {
        try (HostDevice device = new HostDevice(dir); NodeLocalRegistry registry = NodeLocalRegistry.open(dir, 64)) {
            Custom broken = new Custom(new DeviceIpcTransport(device), Endpoint.DEVICE_IPC);
            broken.advertise = b -> {
                throw new IllegalStateException("NIC went away");
            };
            long before = memoryFiles(dir);
            try {
                new KvFixture(device, DeviceBytes.HOST, false, registry, KvFixture.NS, t -> t,
                        b -> b.transports(List.of(broken)).poolBytes(4 * KvFixture.chunkBytes(KvFixture.LAYOUT, KvFixture.CHUNK)));
                fail("built");
            } catch (IllegalStateException expected) {
                // the transport's failure
            }
            assertEquals(before, memoryFiles(dir),
                    "the export pool allocated by the failed build() (or the fixture's cache) is still allocated");
        }
    }

    /**
     * Transports whose endpoints together exceed an offer's 384 bytes are refused when the marketplace is built,
     * not by every export after its copy.
     */
    @Test
    void endpointsThatCannotFitAnOfferAreRefusedAtBuildOrSkippedAtExport() throws Exception {
        try (HostDevice device = new HostDevice(dir); NodeLocalRegistry registry = NodeLocalRegistry.open(dir, 64)) {
            Custom tcp = new Custom(new DeviceIpcTransport(device), Endpoint.TCP);
            tcp.advertise = b -> Optional.of(new Endpoint(Endpoint.TCP, new byte[Endpoint.MAX_BYTES]));
            Custom rdma = new Custom(new DeviceIpcTransport(device), Endpoint.RDMA);
            rdma.advertise = b -> Optional.of(new Endpoint(Endpoint.RDMA, new byte[Endpoint.MAX_BYTES]));
            KvFixture f;
            try {
                f = new KvFixture(device, DeviceBytes.HOST, false, registry, KvFixture.NS, t -> t,
                        b -> b.transports(List.of(new DeviceIpcTransport(device), tcp, rdma))
                                .poolBytes(4 * KvFixture.chunkBytes(KvFixture.LAYOUT, KvFixture.CHUNK)));
            } catch (IllegalArgumentException refusedAtBuild) {
                return; // acceptable
            }
            try (KvFixture fixture = f) {
                int[] blocks = KvFixture.scattered(4, 1);
                fixture.fill(blocks, 4, 1);
                try {
                    ExportResult r = fixture.market.export(KvFixture.tokens(64, 1), 64, blocks);
                    assertEquals(0, r.chunksPublished());
                } catch (IllegalArgumentException e) {
                    fail("export() threw on a valid block table because the transports' endpoints exceed "
                            + Offer.MAX_ENDPOINT_BYTES + " bytes (the builder accepted them): " + e.getMessage());
                }
            }
        }
    }

    /**
     * Route.estimateNanos saturates for extreme but valid routes, so a transport reporting a huge latency or a
     * vanishing throughput ranks last, never first.
     */
    @Test
    void aValidRoutesEstimateIsNeverNegative() {
        assertTrue(new Route(Locality.SAME_NODE, 10_000, Double.MIN_VALUE).estimateNanos(4096) >= 0,
                "estimate of a valid route is negative: " + new Route(Locality.SAME_NODE, 10_000, Double.MIN_VALUE).estimateNanos(4096));
        assertTrue(new Route(Locality.SAME_NODE, Long.MAX_VALUE, 1.0).estimateNanos(4096) >= 0);
    }

    @Test
    void theCheapestRouteIsChosenEvenWhenAnotherRouteIsExtremelySlow() throws Exception {
        try (HostDevice device = new HostDevice(dir); NodeLocalRegistry registry = NodeLocalRegistry.open(dir, 64)) {
            long pool = 4 * KvFixture.chunkBytes(KvFixture.LAYOUT, KvFixture.CHUNK);
            Custom slow = new Custom(new DeviceIpcTransport(device), Endpoint.DEVICE_IPC);
            slow.route = o -> Optional.of(new Route(Locality.SAME_NODE, 10_000, Double.MIN_VALUE));
            Custom fast = new Custom(new DeviceIpcTransport(device), Endpoint.DEVICE_IPC);
            fast.route = o -> Optional.of(new Route(Locality.SAME_NODE, 10_000, 100.0));
            try (KvFixture a = new KvFixture(device, DeviceBytes.HOST, false, registry, KvFixture.NS, t -> t,
                    b -> b.poolBytes(pool));
                 KvFixture b = new KvFixture(device, DeviceBytes.HOST, false, registry, KvFixture.NS, t -> t,
                         x -> x.poolBytes(pool).transports(List.of(slow, fast)))) {
                int[] blocks = io.kvmarket.testkit.KvPattern.range(0, 4);
                a.fill(blocks, 4, 3);
                a.market.export(KvFixture.tokens(64, 3), 64, blocks);
                Match m = b.market.match(KvFixture.tokens(64, 3), 64);
                assertEquals(64, m.tokens());
                LoadResult r = b.market.load(m, io.kvmarket.testkit.KvPattern.range(10, 4)).join();
                assertEquals(64, r.tokensImported());
                assertEquals(0, slow.fetches.get(), "the route of 10^300+ ns was taken over the one of 10 us");
                assertEquals(1, fast.fetches.get());
            }
        }
    }

    /** Transports that advertise nothing, or two of one kind: exports skip or carry one endpoint per kind. */
    @Test
    void silentAndDuplicateAdvertisersAreHandled() throws Exception {
        try (HostDevice device = new HostDevice(dir); NodeLocalRegistry registry = NodeLocalRegistry.open(dir, 64)) {
            long pool = 4 * KvFixture.chunkBytes(KvFixture.LAYOUT, KvFixture.CHUNK);
            Custom silent = new Custom(new DeviceIpcTransport(device), Endpoint.TCP);
            silent.advertise = b -> Optional.empty();
            try (KvFixture a = new KvFixture(device, DeviceBytes.HOST, false, registry, KvFixture.NS, t -> t,
                    b -> b.poolBytes(pool).transports(List.of(silent)))) {
                int[] blocks = io.kvmarket.testkit.KvPattern.range(0, 4);
                a.fill(blocks, 4, 4);
                ExportResult r = a.market.export(KvFixture.tokens(64, 4), 64, blocks);
                assertEquals(0, r.chunksPublished());
                assertEquals(2, r.chunksSkipped());
            }
            Custom dup1 = new Custom(new DeviceIpcTransport(device), Endpoint.DEVICE_IPC);
            Custom dup2 = new Custom(new DeviceIpcTransport(device), Endpoint.DEVICE_IPC);
            dup2.advertise = b -> Optional.of(new Endpoint(Endpoint.DEVICE_IPC, new byte[] {1, 2, 3}));
            try (KvFixture a = new KvFixture(device, DeviceBytes.HOST, false, registry, KvFixture.NS, t -> t,
                    b -> b.poolBytes(pool).transports(List.of(dup1, dup2)));
                 KvFixture c = new KvFixture(device, DeviceBytes.HOST, false, registry, KvFixture.NS, t -> t,
                         b -> b.poolBytes(pool))) {
                int[] blocks = io.kvmarket.testkit.KvPattern.range(0, 4);
                a.fill(blocks, 4, 5);
                ExportResult r = a.market.export(KvFixture.tokens(64, 5), 64, blocks);
                assertEquals(2, r.chunksPublished());
                Offer o = registry.lookup(a.market.hasher().keys(KvFixture.tokens(64, 5), 64)[0]);
                assertEquals(List.of(a.poolEndpoint()), o.endpoints());
                Match m = c.market.match(KvFixture.tokens(64, 5), 64);
                LoadResult lr = c.market.load(m, io.kvmarket.testkit.KvPattern.range(20, 4)).join();
                assertEquals(64, lr.tokensImported());
                assertEquals(-1, c.firstWrongBlock(io.kvmarket.testkit.KvPattern.range(20, 4), 4, 5));
            }
        }
    }

    /** A route for an offer the transport cannot fetch: a miss with a reason, never an exception or wrong bytes. */
    @Test
    void aRouteThatCannotBeFetchedIsAMiss() throws Exception {
        try (HostDevice device = new HostDevice(dir); NodeLocalRegistry registry = NodeLocalRegistry.open(dir, 64)) {
            long pool = 4 * KvFixture.chunkBytes(KvFixture.LAYOUT, KvFixture.CHUNK);
            Custom liar = new Custom(new DeviceIpcTransport(device), Endpoint.RDMA); // routes everything
            liar.route = o -> Optional.of(new Route(Locality.SAME_PROCESS, 0, Double.POSITIVE_INFINITY));
            try (KvFixture a = new KvFixture(device, DeviceBytes.HOST, false, registry, KvFixture.NS, t -> t,
                    b -> b.poolBytes(pool));
                 KvFixture c = new KvFixture(device, DeviceBytes.HOST, false, registry, KvFixture.NS, t -> t,
                         b -> b.poolBytes(pool).transports(List.of(new Custom(new DeviceIpcTransport(device), 9) {
                             @Override
                             public CompletableFuture<Void> fetch(List<Offer> s, DeviceBuffer d, CopyBatch bt) {
                                 return CompletableFuture.failedFuture(new RuntimeException("cannot"));
                             }
                             @Override
                             public Optional<Route> route(Offer o) {
                                 return Optional.of(new Route(Locality.SAME_PROCESS, 0, Double.POSITIVE_INFINITY));
                             }
                         })))) {
                int[] blocks = io.kvmarket.testkit.KvPattern.range(0, 4);
                a.fill(blocks, 4, 6);
                a.market.export(KvFixture.tokens(64, 6), 64, blocks);
                Match m = c.market.match(KvFixture.tokens(64, 6), 64);
                LoadResult r = c.market.load(m, io.kvmarket.testkit.KvPattern.range(20, 4)).join();
                assertEquals(0, r.tokensImported());
                assertEquals(MissReason.TRANSFER_FAILED, r.reason());
            }
        }
    }
}
