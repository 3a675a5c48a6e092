package io.kvmarket.publicapi;

import io.kvmarket.ExportResult;
import io.kvmarket.KvMarketplace;
import io.kvmarket.LoadResult;
import io.kvmarket.Match;
import io.kvmarket.device.CopyBatch;
import io.kvmarket.device.Device;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.device.DeviceException;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.registry.InProcessRegistry;
import io.kvmarket.registry.Offer;
import io.kvmarket.transfer.Transport;
import io.kvmarket.testkit.FaultyTransport;
import io.kvmarket.testkit.KvFixture;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.HashSet;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;

import static io.kvmarket.testkit.KvPattern.range;
import static io.kvmarket.testkit.KvPattern.tokens;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/** Probes of close()'s hand-off of the pool to the last running operation, and of the gate's bookkeeping. */
@Timeout(90)
class CloseHandoffTest {

    @TempDir
    Path dir;

    /** Keeps a device's copy engine busy for a while, so a copy submitted next completes on the copy thread. */
    static CompletableFuture<Void> busy(Device d, int segments) {
        DeviceBuffer a = d.allocate(64 << 20);
        DeviceBuffer b = d.allocate(64 << 20);
        CopyBatch.Builder batch = CopyBatch.builder();
        for (int i = 0; i < segments; i++) {
            batch.add(0, 0, 64 << 20);
        }
        return d.copy(a, b, batch.build());
    }

    /** A device (say a CUDA one) whose free fails, e.g. a sticky error: free is not declared never to throw. */
    static final class FlakyFreeDevice implements Device {
        final HostDevice d;
        final AtomicBoolean failFree = new AtomicBoolean();
        final AtomicReference<String> thrownFrom = new AtomicReference<>("");

        FlakyFreeDevice(HostDevice d) {
            this.d = d;
        }

        public String name() { return "flaky-" + d.name(); }
        public DeviceBuffer allocate(long bytes) { return d.allocate(bytes); }
        public void free(DeviceBuffer buffer) {
            if (failFree.get()) {
                StringBuilder sb = new StringBuilder();
                for (StackTraceElement el : new Throwable().getStackTrace()) {
                    if (el.getClassName().startsWith("io.kvmarket.") && !el.getClassName().contains("publicapi")) {
                        sb.append("\n  at ").append(el);
                    }
                }
                thrownFrom.set(sb.toString());
                throw new DeviceException("free failed: sticky device error");
            }
            d.free(buffer);
        }
        public byte[] exportHandle(DeviceBuffer buffer) { return d.exportHandle(buffer); }
        public DeviceBuffer openHandle(byte[] handle) { return d.openHandle(handle); }
        public void closeHandle(DeviceBuffer mapped) { d.closeHandle(mapped); }
        public CompletableFuture<Void> copy(DeviceBuffer src, DeviceBuffer dst, CopyBatch batch) {
            return d.copy(src, dst, batch);
        }
        public void close() { d.close(); }
    }

    /**
     * close() on an interrupted thread hands the pool to the running load; the device's free then fails. The
     * load's future must still complete (as a result, or at worst exceptionally): an engine waits on it.
     */
    @Test
    void aLoadWhoseHandedOffReleaseFailsStillCompletes() throws Exception {
        handedOffLoad(true);
    }

    /** Control: the same with a free that works passes, so the hang above comes from the failing free. */
    @Test
    void controlALoadWhoseHandedOffReleaseWorksCompletes() throws Exception {
        handedOffLoad(false);
    }

    private void handedOffLoad(boolean freeFails) throws Exception {
        InProcessRegistry registry = new InProcessRegistry();
        try (HostDevice exporterDevice = new HostDevice(dir); HostDevice importerMock = new HostDevice(dir)) {
            FlakyFreeDevice importerDevice = new FlakyFreeDevice(importerMock);
            KvFixture exporter = Rig.engine(exporterDevice, registry, 4);
            KvFixture importer = Rig.engine(importerDevice, registry, 4);
            int[] p = tokens(64, 11);
            exporter.fill(range(0, 4), 4, 11);
            assertEquals(2, exporter.market.export(p, 64, range(0, 4)).chunksPublished());
            Match m = importer.market.match(p, 64);
            assertEquals(64, m.tokens());
            CompletableFuture<Void> b = busy(importerMock, 30);
            CompletableFuture<LoadResult> load = importer.market.load(m, range(8, 4));
            assertTrue(!b.isDone() && !load.isDone(), "the load completed at once; the test proves nothing");
            importerDevice.failFree.set(freeFails);
            Thread.currentThread().interrupt();
            try {
                importer.market.close(); // hands the pool off to the load
            } finally {
                Thread.interrupted();
            }
            try {
                LoadResult r = load.get(20, TimeUnit.SECONDS);
                assertTrue(r.tokensImported() == 0 || importer.firstWrongBlock(range(8, 4), 4, 11) == -1);
            } catch (java.util.concurrent.ExecutionException acceptable) {
                // completing exceptionally is at least an answer
            } catch (java.util.concurrent.TimeoutException e) {
                fail("the load's future never completed; free threw from:" + importerDevice.thrownFrom.get());
            } finally {
                b.get(20, TimeUnit.SECONDS);
                exporter.market.close();
            }
        }
    }

    /**
     * The same, with only library parts: try-with-resources closes the marketplace (on an interrupted thread, as
     * after shutdownNow) and then its HostDevice while a load is still queued. The load's future never completes.
     */
    @Test
    void aLoadStillQueuedWhenTryWithResourcesClosesMarketplaceThenDeviceStillCompletes() throws Exception {
        InProcessRegistry registry = new InProcessRegistry();
        try (HostDevice exporterDevice = new HostDevice(dir)) {
            KvFixture exporter = Rig.engine(exporterDevice, registry, 4);
            int[] p = tokens(64, 12);
            exporter.fill(range(0, 4), 4, 12);
            assertEquals(2, exporter.market.export(p, 64, range(0, 4)).chunksPublished());
            CompletableFuture<LoadResult> load;
            CompletableFuture<Void> b;
            try (HostDevice importerDevice = new HostDevice(dir)) {
                KvFixture importer = Rig.engine(importerDevice, registry, 4);
                try (KvMarketplace market = importer.market) {
                    Match m = market.match(p, 64);
                    assertEquals(64, m.tokens());
                    b = busy(importerDevice, 30);
                    load = market.load(m, range(8, 4));
                    assertTrue(!load.isDone(), "the load completed at once; the test proves nothing");
                    Thread.currentThread().interrupt();
                }
                Thread.interrupted();
            }
            try {
                load.get(20, TimeUnit.SECONDS);
            } catch (java.util.concurrent.ExecutionException acceptable) {
                // an answer
            } catch (java.util.concurrent.TimeoutException e) {
                fail("the load's future never completed after the marketplace and then its device were closed");
            } finally {
                exporter.market.close();
            }
        }
    }

    /**
     * Closing marketplace B from a load callback of marketplace A does not wait (it cannot know whether B's running
     * export needs this thread), but B's offers are withdrawn by the time it returns, and B's export frees B's pool
     * as it ends.
     */
    @Test
    void closeOfAnotherMarketplaceFromALoadCallbackWithdrawsAtOnceAndTheExportFreesThePool() throws Exception {
        InProcessRegistry registry = new InProcessRegistry();
        try (HostDevice dA = new HostDevice(dir); HostDevice dB = new HostDevice(dir)) {
            KvFixture exporter = Rig.engine(dA, registry, 4);
            KvFixture a = Rig.engine(dA, registry, 4);
            Set<Path> before = Rig.memoryFiles(dir);
            KvFixture bRig = Rig.engine(dB, registry, 4);
            Set<Path> bFiles = new HashSet<>(Rig.memoryFiles(dir));
            bFiles.removeAll(before);
            assertEquals(2, bFiles.size());
            int[] p = tokens(64, 13);
            exporter.fill(range(0, 4), 4, 13);
            assertEquals(2, exporter.market.export(p, 64, range(0, 4)).chunksPublished());
            Match m = a.market.match(p, 64);
            assertEquals(64, m.tokens());
            bRig.fill(range(0, 4), 4, 14);
            CompletableFuture<Void> busyB = busy(dB, 90);
            CompletableFuture<ExportResult> bExport = CompletableFuture.supplyAsync(
                    () -> bRig.market.export(tokens(64, 14), 64, range(0, 4)));
            Thread.sleep(100);
            CompletableFuture<Void> busyA = busy(dA, 20);
            AtomicReference<String> seen = new AtomicReference<>();
            AtomicReference<Integer> offeredAfterClose = new AtomicReference<>();
            CountDownLatch closed = new CountDownLatch(1);
            a.market.load(m, range(8, 4)).whenComplete((r, e) -> {
                boolean exportRanBefore = bExport.isDone();
                bRig.market.close();
                offeredAfterClose.set(registry.size());
                Set<Path> left = new HashSet<>();
                try {
                    left.addAll(Rig.memoryFiles(dir));
                } catch (Exception ignored) {
                }
                left.retainAll(bFiles);
                seen.set("export done before close: " + exportRanBefore + ", after close: " + bExport.isDone()
                        + ", B files left: " + left.size());
                closed.countDown();
            });
            assertTrue(closed.await(30, TimeUnit.SECONDS));
            busyA.get(30, TimeUnit.SECONDS);
            busyB.get(30, TimeUnit.SECONDS);
            bExport.get(30, TimeUnit.SECONDS);
            assertEquals(2, offeredAfterClose.get(), "only the exporter's two offers once B's close returned: " + seen);
            Set<Path> left = new HashSet<>(Rig.memoryFiles(dir));
            left.retainAll(bFiles);
            assertEquals(1, left.size(), "B's export, ending after the close, freed B's pool (the cache stays)");
            a.market.close();
            exporter.market.close();
        }
    }

    /** After a load whose transport threw an Error, close() neither waits 10 s nor keeps the pool's memory. */
    @Test
    void anErrorFromAUserTransportDoesNotLeaveTheMarketplaceForeverBusy() throws Exception {
        InProcessRegistry registry = new InProcessRegistry();
        try (HostDevice device = new HostDevice(dir)) {
            KvFixture exporter = Rig.engine(device, registry, 4);
            Set<Path> before = Rig.memoryFiles(dir);
            KvFixture importer = Rig.engine(device, registry, 4, 10_000, t -> {
                FaultyTransport failing = new FaultyTransport(t);
                failing.beforeFetch = o -> {
                    throw new AssertionError("user transport assertion");
                };
                return failing;
            });
            Set<Path> mine = new HashSet<>(Rig.memoryFiles(dir));
            mine.removeAll(before);
            int[] p = tokens(64, 15);
            exporter.fill(range(0, 4), 4, 15);
            exporter.market.export(p, 64, range(0, 4));
            Match m = importer.market.match(p, 64);
            assertEquals(64, m.tokens());
            assertThrows(AssertionError.class, () -> importer.market.load(m, range(8, 4)));
            long t0 = System.nanoTime();
            importer.market.close();
            long ms = (System.nanoTime() - t0) / 1_000_000;
            Set<Path> left = new HashSet<>(Rig.memoryFiles(dir));
            left.retainAll(mine);
            exporter.market.close();
            assertTrue(ms < 5_000 && left.size() == 1, "close took " + ms + " ms; files of the importer left: "
                    + left.size() + " (only its KV cache should remain)");
        }
    }

    /**
     * A transport whose route() throws during match: the pins match already took must not stay held for the
     * pin lease (the exporter cannot evict them meanwhile).
     */
    @Test
    void aThrowingRouteDuringMatchDoesNotLeakPins() throws Exception {
        InProcessRegistry registry = new InProcessRegistry();
        try (HostDevice device = new HostDevice(dir)) {
            KvFixture exporter = Rig.engine(device, registry, 2);
            AtomicInteger calls = new AtomicInteger();
            KvFixture importer = Rig.engine(device, registry, 4, 60_000, t -> {
                FaultyTransport flaky = new FaultyTransport(t);
                flaky.beforeRoute = o -> {
                    if (calls.incrementAndGet() == 2) {
                        throw new IllegalStateException("link down");
                    }
                };
                return flaky;
            });
            int[] p = tokens(64, 16);
            exporter.fill(range(0, 4), 4, 16);
            assertEquals(2, exporter.market.export(p, 64, range(0, 4)).chunksPublished());
            try {
                Match m = importer.market.match(p, 64);
                importer.market.release(m);
            } catch (IllegalStateException thrown) {
                // the user's exception surfaced; the match is lost to the caller
            }
            exporter.fill(range(4, 4), 4, 17);
            ExportResult r = exporter.market.export(tokens(64, 17), 64, range(4, 4));
            importer.market.close();
            exporter.market.close();
            assertEquals(2, r.chunksPublished(), "a pin from the failed match kept a chunk: " + r);
        }
    }

    /**
     * An engine that exports from a load's completion callback (the next step after the import) on the device's
     * thread would wait for its copy on that very thread: the export is refused with a clear error instead, and the
     * device keeps working.
     */
    @Test
    void anExportFromALoadCallbackIsRefusedInsteadOfHangingTheDevice() throws Exception {
        InProcessRegistry registry = new InProcessRegistry();
        try (HostDevice device = new HostDevice(dir)) {
            KvFixture exporter = Rig.engine(device, registry, 4);
            KvFixture importer = Rig.engine(device, registry, 4);
            int[] p = tokens(64, 18);
            exporter.fill(range(0, 4), 4, 18);
            exporter.market.export(p, 64, range(0, 4));
            Match m = importer.market.match(p, 64);
            CompletableFuture<Void> b = busy(device, 10);
            importer.fill(range(20, 4), 4, 19);
            CompletableFuture<ExportResult> next = importer.market.load(m, range(8, 4))
                    .thenApply(r -> importer.market.export(tokens(64, 19), 64, range(20, 4)));
            java.util.concurrent.ExecutionException e = org.junit.jupiter.api.Assertions.assertThrows(
                    java.util.concurrent.ExecutionException.class, () -> next.get(20, TimeUnit.SECONDS));
            assertTrue(e.getCause() instanceof IllegalStateException, String.valueOf(e.getCause()));
            b.get(5, TimeUnit.SECONDS);
            CompletableFuture<ExportResult> later = importer.market.load(importer.market.match(p, 64), range(8, 4))
                    .thenApplyAsync(r -> importer.market.export(tokens(64, 19), 64, range(20, 4)));
            assertEquals(2, later.get(20, TimeUnit.SECONDS).chunksPublished(), "the async variant exports");
            importer.market.close();
            exporter.market.close();
        }
    }
}
