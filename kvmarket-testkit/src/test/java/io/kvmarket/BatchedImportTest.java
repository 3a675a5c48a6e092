package io.kvmarket;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.device.Device;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.kv.PagedKvCache;
import io.kvmarket.registry.shm.NodeLocalRegistry;
import io.kvmarket.transfer.DeviceIpcTransport;
import io.kvmarket.testkit.KvFixture;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;

import static io.kvmarket.testkit.KvFixture.LAYOUT;
import static io.kvmarket.testkit.KvFixture.NS;
import static io.kvmarket.testkit.KvFixture.scattered;
import static io.kvmarket.testkit.KvFixture.tokens;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The device sees one batched copy per source of an import, reading the peer's memory directly. */
class BatchedImportTest {

    @TempDir
    Path dir;

    /** Records every copy the marketplace asks of the device. */
    static final class RecordingDevice implements Device {
        final HostDevice delegate;
        final List<CopyBatch> batches = new CopyOnWriteArrayList<>();
        final List<DeviceBuffer> sources = new CopyOnWriteArrayList<>();

        RecordingDevice(HostDevice delegate) {
            this.delegate = delegate;
        }

        public String name() {
            return "recording-" + delegate.name();
        }

        public DeviceBuffer allocate(long bytes) {
            return delegate.allocate(bytes);
        }

        public void free(DeviceBuffer buffer) {
            delegate.free(buffer);
        }

        public byte[] exportHandle(DeviceBuffer buffer) {
            return delegate.exportHandle(buffer);
        }

        public DeviceBuffer openHandle(byte[] handle) {
            return delegate.openHandle(handle);
        }

        public void closeHandle(DeviceBuffer mapped) {
            delegate.closeHandle(mapped);
        }

        public CompletableFuture<Void> copy(DeviceBuffer src, DeviceBuffer dst, CopyBatch batch) {
            batches.add(batch);
            sources.add(src);
            return delegate.copy(src, dst, batch);
        }

        public void close() {
            delegate.close();
        }
    }

    @Test
    void importFromTwoExportersIsOneBatchedDeviceCopyPerExporter() {
        try (NodeLocalRegistry registry = NodeLocalRegistry.open(dir, 1024);
             KvFixture first = new KvFixture(dir, registry, 8);
             KvFixture second = new KvFixture(dir, registry, 8);
             RecordingDevice device = new RecordingDevice(new HostDevice(dir))) {
            int[] t = tokens(128, 5);
            int[] blocks = scattered(8, 5);
            // Chunks 0 and 2 from the first exporter, 1 and 3 from the second: sources interleave.
            first.fill(blocks, 8, 5);
            second.fill(blocks, 8, 5);
            first.market.export(t, 32, blocks);
            second.market.export(t, 64, blocks);
            first.market.export(t, 96, blocks);
            second.market.export(t, 128, blocks);

            PagedKvCache cache = new PagedKvCache(device.allocate(PagedKvCache.requiredBytes(LAYOUT, 64)), LAYOUT, 64);
            try (KvMarketplace market = KvMarketplace.builder().namespace(NS).kvCache(cache).device(device)
                    .registry(registry).chunkTokens(32).transports(List.of(new DeviceIpcTransport(device))).build()) {
                device.batches.clear();
                int[] dst = {10, 11, 12, 13, 14, 15, 16, 17};
                LoadResult r = market.load(market.match(t, 128), dst).join();
                assertEquals(128, r.tokensImported());
                assertEquals(2, device.batches.size(), "one device call per source, not per chunk or block");
                for (int i = 0; i < 2; i++) {
                    assertTrue(device.sources.get(i).isPeerMapping(), "read straight from the peer's memory");
                    // Two chunks of consecutive destination blocks: one run per region and chunk.
                    assertEquals(2 * LAYOUT.regionsPerBlock(), device.batches.get(i).segments());
                    assertEquals(2 * first.market.pool().chunkBytes(), device.batches.get(i).totalBytes());
                }
                var memory = ((io.kvmarket.device.host.HostBuffer) cache.buffer()).memory();
                byte[] got = new byte[(int) (8 * LAYOUT.blockBytes())];
                int p = 0;
                for (int b = 0; b < 8; b++) {
                    for (int reg = 0; reg < LAYOUT.regionsPerBlock(); reg++) {
                        memory.get((int) cache.regionOffset(dst[b], reg), got, p, (int) LAYOUT.regionBytes());
                        p += (int) LAYOUT.regionBytes();
                    }
                }
                assertArrayEquals(first.kvBytes(blocks, 8), got);
            }
        }
    }
}
