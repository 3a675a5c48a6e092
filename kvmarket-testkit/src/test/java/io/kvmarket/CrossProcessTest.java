package io.kvmarket;

import io.kvmarket.device.host.HostDevice;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.PublishOutcome;
import io.kvmarket.testkit.ChildJvm;
import io.kvmarket.testkit.RegistryContractTest;
import io.kvmarket.registry.shm.NodeLocalRegistry;
import io.kvmarket.testkit.KvFixture;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;

import static io.kvmarket.testkit.KvFixture.scattered;
import static io.kvmarket.testkit.KvFixture.tokens;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

/** Two real processes on one node registry; the exporter dies by SIGKILL. */
class CrossProcessTest {

    @TempDir
    Path dir;
    NodeLocalRegistry registry;
    KvFixture importer;
    ChildJvm child;

    @BeforeEach
    void open() {
        registry = NodeLocalRegistry.open(dir, 1024);
        importer = new KvFixture(dir, registry, 4);
    }

    @AfterEach
    void close() {
        if (child != null) {
            child.close();
        }
        importer.close();
        registry.close();
    }

    private String start(String... args) {
        child = ChildJvm.start(ExporterProcess.class, args);
        return child.awaitLine("READY", Duration.ofSeconds(30));
    }

    private void sigkill() throws Exception {
        child.kill(); // SIGKILL on Linux: no shutdown hooks, no close()
    }

    /** What the exporter's KV looks like, computed here with the same pattern. */
    private byte[] expected(int salt, int blocks) {
        int[] scratch = scattered(blocks, 1234);
        importer.fill(scratch, blocks, salt);
        return importer.kvBytes(scratch, blocks);
    }

    @Test
    @Timeout(60)
    void importFromAnotherProcessDeliversItsBytes() throws Exception {
        assertEquals("READY 4", start("export", dir.toString(), "31"));
        int[] t = tokens(128, 31);
        Match m = importer.market.match(t, 128);
        assertEquals(128, m.tokens());
        int[] dst = {40, 3, 17, 9, 22, 61, 0, 35};
        assertEquals(128, importer.market.load(m, dst).join().tokensImported());
        assertArrayEquals(expected(31, 8), importer.kvBytes(dst, 8));
    }

    @Test
    @Timeout(60)
    void killedExporterYieldsAMissOrCompleteImportAndStopsBeingServed() throws Exception {
        start("export", dir.toString(), "32");
        int[] t = tokens(128, 32);
        Match before = importer.market.match(t, 128);
        assertEquals(128, before.tokens());
        sigkill();
        int[] dst = scattered(8, 5);
        LoadResult r = importer.market.load(before, dst).join();
        int blocks = r.tokensImported() / 16;
        assertArrayEquals(Arrays.copyOf(expected(32, 8), (int) (blocks * KvFixture.LAYOUT.blockBytes())),
                importer.kvBytes(dst, blocks), "whatever was delivered must be the exported bytes");

        Thread.sleep(NodeLocalRegistry.LIVENESS_TTL_MS + 50);
        Match after = importer.market.match(t, 128);
        assertEquals(0, after.tokens());
        assertEquals(MissReason.NO_OFFER, after.reason());

        assertEquals(1, importer.transport.cachedMappings());
        importer.market.housekeep();
        assertEquals(0, importer.transport.cachedMappings(), "the mapping of the dead exporter's pool is closed");

        registry.sweep();
        assertEquals(0, registry.liveSlots(), "the dead exporter's offers are swept");
        new HostDevice(dir).close();
        try (var files = Files.list(dir.resolve("host-device"))) {
            assertEquals(0, files.filter(f -> f.getFileName().toString().startsWith(child.pid() + "-")).count(),
                    "the dead exporter's device memory is deleted");
        }
    }

    @Test
    @Timeout(60)
    void writerKilledWhileChurningNeverBlocksOrMisleadsOthers() throws Exception {
        start("churn", dir.toString());
        Thread.sleep(300);
        sigkill();
        for (int i = 0; i < 200; i++) {
            Offer o = RegistryContractTest.offer(RegistryContractTest.key(i),
                    io.kvmarket.node.ProcessIdentity.current(), i + 1, System.currentTimeMillis() + 60_000);
            assertEquals(PublishOutcome.PUBLISHED, registry.publish(o), "publish " + i);
            assertEquals(o, registry.lookup(o.key()));
        }
        Thread.sleep(NodeLocalRegistry.LIVENESS_TTL_MS + 50);
        registry.sweep();
        assertEquals(200, registry.liveSlots(), "only this process's offers remain");
    }
}
