package io.kvmarket.nvlink;

import io.kvmarket.LoadResult;
import io.kvmarket.Match;
import io.kvmarket.registry.shm.NodeLocalRegistry;
import io.kvmarket.testkit.ChildJvm;
import io.kvmarket.testkit.KvFixture;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/** Two JVMs through CUDA IPC and the node-local registry; runs only where CUDA is usable. */
class CudaIpcImportTest {

    @TempDir
    Path dir;

    @BeforeEach
    void needGpu() {
        assumeTrue(CudaRuntime.isAvailable(), "no usable GPU: " + CudaRuntime.unavailabilityCause());
    }

    @Test
    @Timeout(120)
    void importFromAnotherProcessThroughCudaIpcIsByteExact() throws Exception {
        try (ChildJvm child = ChildJvm.start(CudaExporterProcess.class, dir.toString(), "41");
             NodeLocalRegistry registry = NodeLocalRegistry.open(dir, 1024); KvFixture kv = GpuKv.engine(registry, 4)) {
            assertEquals("READY 4", child.awaitLine("READY", Duration.ofSeconds(60)));
            int[] t = KvFixture.tokens(128, 41);
            Match m = kv.market.match(t, 128);
            assertEquals(128, m.tokens());
            int[] dst = KvFixture.scattered(8, 7);
            assertEquals(128, kv.market.load(m, dst).join().tokensImported());
            assertEquals(-1, kv.firstWrongBlock(dst, 8, 41), "imported KV differs from the exporter's");
        }
    }

    /**
     * The exporter is another process: its pool evicts and reuses chunk memory that this process has mapped through
     * CUDA IPC while it imports; every chunk it counts as imported holds the bytes of its own prompt.
     */
    @Test
    @Timeout(180)
    void evictionInAnotherProcessWhileImportingThroughCudaIpcNeverDeliversWrongBytes() throws Exception {
        int prompts = 6;
        try (ChildJvm child = ChildJvm.start(CudaChurningExporterProcess.class, dir.toString(),
                Integer.toString(prompts));
             NodeLocalRegistry registry = NodeLocalRegistry.open(dir, 1024); KvFixture importer = GpuKv.engine(registry, 2)) {
            child.awaitLine("READY", Duration.ofSeconds(60));
            int hits = 0;
            for (int round = 0; round < 300; round++) {
                int s = (round * 5) % prompts;
                int[] dst = KvFixture.scattered(4, round);
                LoadResult r = importer.market.load(importer.market.match(KvFixture.tokens(64, s), 64), dst).join();
                assertEquals(-1, importer.firstWrongBlock(dst, r.tokensImported() / 16, s),
                        "wrong bytes for prompt " + s + " after " + r);
                hits += r.tokensImported() > 0 ? 1 : 0;
            }
            assertTrue(hits > 0, "some imports hit");
            child.stop(Duration.ofSeconds(30));
            String evictions = child.awaitLine("EVICTIONS", Duration.ofSeconds(30));
            assertTrue(Long.parseLong(evictions.substring("EVICTIONS ".length())) > 0, evictions);
        }
    }

    /** The same within one process (the exporter's own mapping, no IPC), with the exporter on another thread. */
    @Test
    @Timeout(120)
    void evictionWhileImportingNeverDeliversWrongBytes() throws Exception {
        int prompts = 6;
        try (NodeLocalRegistry registry = NodeLocalRegistry.open(dir, 1024);
             KvFixture exporter = GpuKv.engine(registry, 3);
             KvFixture importer = GpuKv.engine(registry, 2)) {
            AtomicBoolean stop = new AtomicBoolean();
            AtomicReference<Throwable> failure = new AtomicReference<>();
            AtomicInteger hits = new AtomicInteger();
            Thread exportLoop = new Thread(() -> {
                int[] blocks = KvFixture.scattered(4, 1);
                for (int round = 0; !stop.get(); round++) {
                    int s = round % prompts;
                    exporter.fill(blocks, 4, s);
                    exporter.market.export(KvFixture.tokens(64, s), 64, blocks);
                }
            });
            exportLoop.start();
            try {
                for (int round = 0; round < 300; round++) {
                    int s = (round * 5) % prompts;
                    int[] dst = KvFixture.scattered(4, round);
                    LoadResult r = importer.market.load(importer.market.match(KvFixture.tokens(64, s), 64), dst).join();
                    if (importer.firstWrongBlock(dst, r.tokensImported() / 16, s) >= 0) {
                        throw new AssertionError("wrong bytes for prompt " + s + " after " + r);
                    }
                    hits.addAndGet(r.tokensImported() > 0 ? 1 : 0);
                }
            } catch (Throwable t) {
                failure.set(t);
            } finally {
                stop.set(true);
                exportLoop.join();
            }
            assertNull(failure.get(), () -> String.valueOf(failure.get()));
            assertTrue(hits.get() > 0, "some imports hit");
            assertTrue(exporter.market.pool().evictions() > 0, "evictions ran");
        }
    }
}
