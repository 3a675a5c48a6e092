package io.kvmarket;

import io.kvmarket.registry.shm.NodeLocalRegistry;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.testkit.DeviceBytes;
import io.kvmarket.testkit.KvFixture;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.Arrays;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;

import static io.kvmarket.testkit.KvFixture.scattered;
import static io.kvmarket.testkit.KvFixture.tokens;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * An exporter cycles more prompts than its pool holds, so it evicts constantly, while importers load the same
 * prompts: every token an import reports must carry exactly the bytes exported for it.
 */
class ConcurrentEvictionTest {

    @TempDir
    Path dir;

    @Test
    @Timeout(60)
    void importsUnderConstantEvictionNeverDeliverWrongBytes() throws Exception {
        int prompts = 6;
        try (NodeLocalRegistry registry = NodeLocalRegistry.open(dir, 1024);
             KvFixture exporter = new KvFixture(dir, registry, 3);
             // 1 ms pins lapse during most copies: only the generation check keeps reused memory out of a hit.
             KvFixture importer = new KvFixture(new HostDevice(dir), DeviceBytes.HOST, true, registry, KvFixture.NS,
                     t -> t, b -> b.poolBytes(2 * KvFixture.chunkBytes(KvFixture.LAYOUT, KvFixture.CHUNK))
                             .pinLeaseMillis(1))) {
            byte[][] expected = new byte[prompts][];
            int[] scratch = scattered(4, 77);
            for (int s = 0; s < prompts; s++) {
                importer.fill(scratch, 4, s);
                expected[s] = importer.kvBytes(scratch, 4);
            }
            AtomicBoolean stop = new AtomicBoolean();
            AtomicReference<Throwable> failure = new AtomicReference<>();
            AtomicInteger imports = new AtomicInteger();
            AtomicInteger importedTokens = new AtomicInteger();
            Thread exportLoop = new Thread(() -> {
                int[] blocks = scattered(4, 1);
                for (int round = 0; !stop.get(); round++) {
                    int s = round % prompts;
                    exporter.fill(blocks, 4, s);
                    exporter.market.export(tokens(64, s), 64, blocks);
                }
            });
            Thread importLoop = new Thread(() -> {
                try {
                    for (int round = 0; !stop.get(); round++) {
                        int s = (round * 5) % prompts;
                        int[] dst = scattered(4, round);
                        Match m = importer.market.match(tokens(64, s), 64);
                        LoadResult r = importer.market.load(m, dst).join();
                        int blocks = r.tokensImported() / 16;
                        byte[] got = importer.kvBytes(dst, blocks);
                        if (!Arrays.equals(Arrays.copyOf(expected[s], got.length), got)) {
                            throw new AssertionError("wrong bytes for prompt " + s + " after " + r);
                        }
                        imports.incrementAndGet();
                        importedTokens.addAndGet(r.tokensImported());
                    }
                } catch (Throwable t) {
                    failure.set(t);
                }
            });
            exportLoop.start();
            importLoop.start();
            Thread.sleep(3000);
            stop.set(true);
            exportLoop.join();
            importLoop.join();
            assertNull(failure.get(), () -> String.valueOf(failure.get()));
            assertTrue(imports.get() > 50, "imports ran: " + imports.get());
            assertTrue(importedTokens.get() > 0, "some imports hit");
            assertTrue(exporter.market.pool().evictions() > 10, "evictions ran: " + exporter.market.pool().evictions());
            assertEquals(0, importer.market.metrics().snapshot().missesByReason()
                    .getOrDefault(MissReason.MALFORMED_OFFER, 0L));
        }
    }
}
