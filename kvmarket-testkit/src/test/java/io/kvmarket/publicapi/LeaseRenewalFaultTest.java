package io.kvmarket.publicapi;

import io.kvmarket.ExportResult;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.registry.shm.NodeLocalRegistry;
import io.kvmarket.testkit.DeviceBytes;
import io.kvmarket.testkit.KvFixture;
import io.kvmarket.testkit.KvPattern;
import io.kvmarket.transfer.DeviceIpcTransport;
import io.kvmarket.transfer.Transport;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;

@Timeout(60)
class LeaseRenewalFaultTest {

    @TempDir
    Path dir;

    /**
     * One evictStale() of a user transport throws once: renewal goes on (an exception escaping the scheduled task
     * once cancelled every later round, and the engine's offers silently expired).
     */
    @Test
    void oneFailingEvictStaleDoesNotStopLeaseRenewal() throws Exception {
        assertRenewalSurvives(new IllegalStateException("transient failure while evicting"));
    }

    /**
     * The JVM's report of a fault over a truncated mapping, which may come in a renewal round after the registry's
     * call returned, ends that round only: an Error escaping the scheduled task would cancel every later one.
     */
    @Test
    void aFaultReportedInARenewalRoundDoesNotStopLeaseRenewal() throws Exception {
        assertRenewalSurvives(new InternalError("a fault occurred in a recent unsafe memory access operation in"
                + " compiled Java code"));
    }

    /** The first renewal round meets {@code thrown} (from a transport's evictStale); the offers must stay served. */
    private void assertRenewalSurvives(Throwable thrown) throws Exception {
        try (HostDevice device = new HostDevice(dir); NodeLocalRegistry registry = NodeLocalRegistry.open(dir, 64)) {
            AtomicInteger calls = new AtomicInteger();
            Transport flaky = new TransportSpiTest.Custom(new DeviceIpcTransport(device), 1) {
                @Override
                public void evictStale() {
                    if (calls.incrementAndGet() == 1) {
                        if (thrown instanceof Error e) {
                            throw e;
                        }
                        throw (RuntimeException) thrown;
                    }
                }
            };
            try (KvFixture a = new KvFixture(device, DeviceBytes.HOST, false, registry, KvFixture.NS, t -> t,
                    b -> b.poolBytes(4 * KvFixture.chunkBytes(KvFixture.LAYOUT, KvFixture.CHUNK))
                            .transports(List.of(flaky)).offerLeaseMillis(300))) {
                int[] blocks = KvPattern.range(0, 4);
                a.fill(blocks, 4, 1);
                ExportResult r = a.market.export(KvFixture.tokens(64, 1), 64, blocks);
                assertEquals(2, r.chunksPublished());
                ChunkKey k = a.market.hasher().keys(KvFixture.tokens(64, 1), 64)[0];
                Thread.sleep(1500); // five lease lengths; renewal runs every 100 ms
                assertNotNull(registry.lookup(k), "the offer expired: renewal stopped after " + thrown + " ("
                        + calls.get() + " evictStale calls in 1.5 s)");
            }
        }
    }
}
