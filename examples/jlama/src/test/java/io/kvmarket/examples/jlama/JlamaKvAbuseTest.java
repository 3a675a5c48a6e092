package io.kvmarket.examples.jlama;

import com.github.tjake.jlama.model.AbstractModel;
import com.github.tjake.jlama.tensor.KvBufferCache;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.key.Namespace;
import io.kvmarket.kv.KvLayout;
import io.kvmarket.kv.PagedKvCache;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Path;
import java.util.UUID;

import static io.kvmarket.examples.jlama.JlamaMarketplaceTest.tokens;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/**
 * Careless and hostile use of {@link JlamaKv} on a model whose Jlama pages hold many positions (2 layers x 512
 * positions a page: KV rows of 128 floats, 2,048 positions), so runs split at Jlama's page boundaries as well as at
 * blocks.
 */
@Timeout(300)
class JlamaKvAbuseTest {

    @TempDir
    static Path dir;
    static Path modelDir;
    static AbstractModel model;
    static AbstractModel small;
    static KvBufferCache buffers;
    static KvBufferCache smallBuffers;

    @BeforeAll
    static void load() throws Exception {
        modelDir = dir.resolve("big-pages");
        RandomLlama.write(modelDir, new RandomLlama.Shape(2, 128, 2, 2, 128, 2048), 5);
        model = JlamaExporter.load(modelDir);
        Path smallDir = dir.resolve("small");
        RandomLlama.write(smallDir, new RandomLlama.Shape(2, 64, 4, 2, 128, 512), 42);
        small = JlamaExporter.load(smallDir);
        buffers = new KvBufferCache(model);
        smallBuffers = new KvBufferCache(small);
    }

    @AfterAll
    static void close() {
        if (buffers != null) {
            buffers.close();
            smallBuffers.close();
        }
        if (model != null) {
            model.close();
            small.close();
        }
    }

    static float pattern(int l, int k, int p, int i) {
        return l * 1_000_000f + k * 500_000f + p * 200f + i;
    }

    static void fill(KvBufferCache.KvBuffer kv, int positions) {
        for (int l = 0; l < 2; l++) {
            for (int p = 0; p < positions; p++) {
                for (int k = 0; k < 2; k++) {
                    MemorySegment row = (k == 0 ? kv.getKeyTensorForPosition(l, p) : kv.getValTensorForPosition(l, p))
                            .getMemorySegment();
                    for (int i = 0; i < 128; i++) {
                        row.setAtIndex(ValueLayout.JAVA_FLOAT, i, pattern(l, k, p, i));
                    }
                }
            }
        }
    }

    static String firstWrongRow(KvBufferCache.KvBuffer kv, int from, int to) {
        for (int l = 0; l < 2; l++) {
            for (int p = from; p < to; p++) {
                for (int k = 0; k < 2; k++) {
                    MemorySegment row = (k == 0 ? kv.getKeyTensorForPosition(l, p) : kv.getValTensorForPosition(l, p))
                            .getMemorySegment();
                    for (int i = 0; i < 128; i++) {
                        if (row.getAtIndex(ValueLayout.JAVA_FLOAT, i) != pattern(l, k, p, i)) {
                            return "layer " + l + (k == 0 ? " K" : " V") + " position " + p + " value " + i;
                        }
                    }
                }
            }
        }
        return null;
    }

    /** Positions across Jlama's page boundary at 512, blocks of 24 (not dividing 512), scattered block ids. */
    @Test
    void roundTripAcrossJlamaPageBoundaries() {
        int blocksNeeded = (1100 + 23) / 24;
        KvLayout layout = JlamaKv.layout(model, 24);
        try (HostDevice device = new HostDevice(dir.resolve("device"))) {
            DeviceBuffer buffer = device.allocate(PagedKvCache.requiredBytes(layout, blocksNeeded + 3));
            PagedKvCache cache = new PagedKvCache(buffer, layout, blocksNeeded + 3);
            MemorySegment memory = MemorySegment.ofBuffer(device.hostView(buffer).orElseThrow());
            int[] table = new int[blocksNeeded];
            for (int i = 0; i < blocksNeeded; i++) {
                table[i] = blocksNeeded + 2 - i; // reversed
            }
            try (KvBufferCache.KvBuffer src = buffers.getEphemeralKvBuffer();
                 KvBufferCache.KvBuffer dst = buffers.getEphemeralKvBuffer()) {
                assertEquals(512, src.getKeyTensorsUptoPosition(0, 0)[0].shape().first(), "positions a page");
                fill(src, 1100);
                JlamaKv.toCache(model, src, 0, 500, cache, memory, table);
                JlamaKv.toCache(model, src, 500, 1030, cache, memory, table);
                JlamaKv.toCache(model, src, 1030, 1100, cache, memory, table);
                // the cache's bytes themselves, row by row
                long row = 128 * 4;
                for (int p = 0; p < 1100; p += 37) {
                    for (int l = 0; l < 2; l++) {
                        for (int k = 0; k < 2; k++) {
                            long at = cache.regionOffset(table[p / 24], 2 * l + k) + (p % 24) * row;
                            assertEquals(pattern(l, k, p, 5), memory.get(ValueLayout.JAVA_FLOAT, at + 5 * 4),
                                    "cache l" + l + " k" + k + " p" + p);
                        }
                    }
                }
                JlamaKv.fromCache(model, cache, memory, table, 0, 700, dst);
                JlamaKv.fromCache(model, cache, memory, table, 700, 1100, dst);
                assertEquals(null, firstWrongRow(dst, 0, 1100));
            } finally {
                device.free(buffer);
            }
        }
    }

    /** End to end on the big-page model: an import of 96 positions gives a full prefill's answer. */
    @Test
    void importOnBigPagesAnswersAsAFullPrefill() {
        Namespace ns = JlamaKv.namespace(model, modelDir, "hostile-big", "rev " + UUID.randomUUID(), 16);
        int[] prompt = tokens(100, 3, true);
        try (JlamaEngine a = JlamaEngine.withMarketplace(model, ns, 256, b -> b.chunkTokens(32));
             JlamaEngine b = JlamaEngine.withMarketplace(model, ns, 256, b2 -> b2.chunkTokens(32));
             JlamaEngine alone = JlamaEngine.alone(model, 256)) {
            a.generate(prompt, 2);
            JlamaEngine.Generation g = b.generate(prompt, 2);
            assertEquals(96, g.tokensImported(), g.importNote());
            JlamaEngine.Generation full = alone.generate(prompt, 2);
            assertArrayEquals(full.firstLogits(), g.firstLogits());
            assertArrayEquals(full.tokens(), g.tokens());
        }
    }

    /** Programming errors in the copy's arguments: IllegalArgumentException, and nothing written. */
    @Test
    void badCopyArguments() {
        KvLayout layout = JlamaKv.layout(model, 16);
        try (HostDevice device = new HostDevice(dir.resolve("device2"))) {
            DeviceBuffer buffer = device.allocate(PagedKvCache.requiredBytes(layout, 4));
            PagedKvCache cache = new PagedKvCache(buffer, layout, 4);
            MemorySegment memory = MemorySegment.ofBuffer(device.hostView(buffer).orElseThrow());
            try (KvBufferCache.KvBuffer kv = buffers.getEphemeralKvBuffer()) {
                fill(kv, 64);
                assertThrows(IllegalArgumentException.class,
                        () -> JlamaKv.toCache(model, kv, 20, 10, cache, memory, new int[] {0, 1}));
                assertThrows(IllegalArgumentException.class,
                        () -> JlamaKv.toCache(model, kv, 0, 64, cache, memory, new int[] {0, 1, 2}));
                assertThrows(IllegalArgumentException.class,
                        () -> JlamaKv.toCache(model, kv, 0, 32, cache, memory, new int[] {0, 4}));
                assertThrows(IllegalArgumentException.class,
                        () -> JlamaKv.toCache(model, kv, 0, 32, cache, memory, new int[] {-1, 0}));
                assertThrows(IllegalArgumentException.class,
                        () -> JlamaKv.toCache(model, kv, -1, 32, cache, memory, new int[] {0, 1}));
                assertThrows(IllegalArgumentException.class,
                        () -> JlamaKv.toCache(model, kv, 0, 2049, cache, memory, new int[200]));
                assertThrows(IllegalArgumentException.class,
                        () -> JlamaKv.toCache(model, kv, 0, 32, cache, memory.asSlice(0, memory.byteSize() - 1),
                                new int[] {0, 1}));
            } finally {
                device.free(buffer);
            }
        }
    }

    /**
     * Buffers of another model, with narrower rows (pages of one position) or wider ones: refused both ways before
     * a byte is copied, not written over another layer's rows or past a page.
     */
    @Test
    void buffersOfAnotherModelAreRefusedByTheCopy() {
        try (HostDevice device = new HostDevice(dir.resolve("device4"))) {
            for (AbstractModel owner : new AbstractModel[] {model, small}) {
                KvLayout layout = JlamaKv.layout(owner, 16);
                DeviceBuffer buffer = device.allocate(PagedKvCache.requiredBytes(layout, 4));
                PagedKvCache cache = new PagedKvCache(buffer, layout, 4);
                MemorySegment memory = MemorySegment.ofBuffer(device.hostView(buffer).orElseThrow());
                int[] blocks = {0, 1};
                try (KvBufferCache.KvBuffer foreign = (owner == model ? smallBuffers : buffers)
                        .getEphemeralKvBuffer()) {
                    assertThrows(IllegalArgumentException.class,
                            () -> JlamaKv.fromCache(owner, cache, memory, blocks, 0, 32, foreign));
                    assertThrows(IllegalArgumentException.class,
                            () -> JlamaKv.toCache(owner, foreign, 0, 32, cache, memory, blocks));
                } finally {
                    device.free(buffer);
                }
            }
        }
    }
}
