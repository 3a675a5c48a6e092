package io.kvmarket;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.device.Device;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.kv.PagedKvCache;
import io.kvmarket.registry.shm.NodeLocalRegistry;
import io.kvmarket.testkit.KvFixture;
import io.kvmarket.testkit.FaultyTransport;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Proxy;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;

import static io.kvmarket.testkit.KvFixture.CHUNK;
import static io.kvmarket.testkit.KvFixture.LAYOUT;
import static io.kvmarket.testkit.KvFixture.NS;
import static io.kvmarket.testkit.KvFixture.scattered;
import static io.kvmarket.testkit.KvFixture.tokens;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** After {@code close()} returns, nothing of that marketplace is offered and none of its copies runs. */
@Timeout(30)
class MarketplaceCloseTest {

    @TempDir
    Path dir;
    NodeLocalRegistry registry;

    @BeforeEach
    void open() {
        registry = NodeLocalRegistry.open(dir, 1024);
    }

    @AfterEach
    void close() {
        registry.close();
    }

    @Test
    void everyCallButReleaseThrowsAfterClose() {
        try (KvFixture f = new KvFixture(dir, registry, 2)) {
            int[] t = tokens(64, 1);
            f.market.export(t, 64, scattered(4, 1));
            Match m = f.market.match(t, 64);
            f.market.close();
            f.market.close(); // idempotent
            assertThrows(IllegalStateException.class, () -> f.market.export(tokens(64, 2), 64, scattered(4, 2)));
            assertThrows(IllegalStateException.class, () -> f.market.match(t, 64));
            assertThrows(IllegalStateException.class, () -> f.market.load(m, scattered(4, 3)));
            f.market.release(m);
            assertEquals(List.of(), registry.lookupPrefix(f.market.hasher().keys(tokens(64, 2), 64), 2),
                    "nothing published after close");
        }
    }

    @Test
    void closeWaitsForAnExportWhoseCopyIsInFlightAndLeavesNothingOffered() throws Exception {
        try (HostDevice host = new HostDevice(dir)) {
            CountDownLatch copying = new CountDownLatch(1);
            CountDownLatch proceed = new CountDownLatch(1);
            AtomicBoolean copyDone = new AtomicBoolean();
            Device slow = slowDevice(host, copying, proceed, copyDone);
            PagedKvCache cache = new PagedKvCache(slow.allocate(PagedKvCache.requiredBytes(LAYOUT, 8)), LAYOUT, 8);
            KvMarketplace market = KvMarketplace.builder().namespace(NS).kvCache(cache).device(slow)
                    .registry(registry).chunkTokens(CHUNK).build();
            int[] t = tokens(64, 4);
            CompletableFuture<ExportResult> export = CompletableFuture.supplyAsync(
                    () -> market.export(t, 64, new int[] {0, 1, 2, 3}));
            assertTrue(copying.await(10, TimeUnit.SECONDS));
            CompletableFuture<Boolean> closed = CompletableFuture.supplyAsync(() -> {
                market.close();
                return copyDone.get();
            });
            Thread.sleep(100);
            proceed.countDown();
            assertTrue(closed.get(10, TimeUnit.SECONDS), "close returned while the export's copy still ran");
            ExportResult r = export.get(10, TimeUnit.SECONDS);
            assertEquals(2, r.chunksPublished() + r.chunksSkipped());
            ChunkKey[] keys = market.hasher().keys(t, 64);
            assertEquals(List.of(), registry.lookupPrefix(keys, keys.length), "offered after close");
        }
    }

    @Test
    void closeWaitsForALoadInFlight() throws Exception {
        FaultyTransport[] wrapped = new FaultyTransport[1];
        try (KvFixture exporter = new KvFixture(dir, registry, 2);
             KvFixture importer = new KvFixture(dir, registry, 2, NS, x -> wrapped[0] = new FaultyTransport(x))) {
            int[] t = tokens(64, 5);
            exporter.market.export(t, 64, scattered(4, 5));
            CountDownLatch fetching = new CountDownLatch(1);
            CountDownLatch proceed = new CountDownLatch(1);
            AtomicBoolean copied = new AtomicBoolean();
            wrapped[0].beforeFetch = o -> {
                fetching.countDown();
                await(proceed);
            };
            wrapped[0].afterFetch = o -> copied.set(true);
            Match m = importer.market.match(t, 64);
            CompletableFuture<LoadResult> load = CompletableFuture.supplyAsync(
                    () -> importer.market.load(m, scattered(4, 6)).join());
            assertTrue(fetching.await(10, TimeUnit.SECONDS));
            CompletableFuture<Boolean> closed = CompletableFuture.supplyAsync(() -> {
                importer.market.close();
                return copied.get();
            });
            Thread.sleep(100);
            proceed.countDown();
            assertTrue(closed.get(10, TimeUnit.SECONDS), "close returned while a load still ran");
            assertEquals(64, load.get().tokensImported());
        }
    }

    /** The host device, with copies into anything but the KV cache held until {@code proceed}. */
    private static Device slowDevice(HostDevice host, CountDownLatch copying, CountDownLatch proceed,
                                     AtomicBoolean copyDone) {
        return (Device) Proxy.newProxyInstance(MarketplaceCloseTest.class.getClassLoader(),
                new Class<?>[] {Device.class}, (proxy, method, args) -> {
                    if (method.getName().equals("copy")) {
                        copying.countDown();
                        await(proceed);
                        CompletableFuture<Void> done = host.copy((DeviceBuffer) args[0], (DeviceBuffer) args[1],
                                (CopyBatch) args[2]);
                        return done.whenComplete((ok, e) -> copyDone.set(true));
                    }
                    try {
                        return method.invoke(host, args);
                    } catch (InvocationTargetException e) {
                        throw e.getCause();
                    }
                });
    }

    private static void await(CountDownLatch latch) {
        try {
            latch.await(10, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
