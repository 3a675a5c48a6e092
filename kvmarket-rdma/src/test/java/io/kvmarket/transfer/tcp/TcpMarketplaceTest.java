package io.kvmarket.transfer.tcp;

import io.kvmarket.LoadResult;
import io.kvmarket.Match;
import io.kvmarket.device.Device;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.registry.InProcessRegistry;
import io.kvmarket.testkit.DeviceBytes;
import io.kvmarket.testkit.KvFixture;
import io.kvmarket.testkit.KvPattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.locks.LockSupport;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Two engines as two nodes would run them (each its own device directory, TCP their only transport) sharing one
 * registry: what one exports the other imports over TCP byte for byte, into scattered blocks; and under random
 * prompts, tiny pools and concurrent exports that evict what is being served, every hit's bytes are exact.
 */
@Timeout(120)
class TcpMarketplaceTest {

    @TempDir
    Path nodeA;
    @TempDir
    Path nodeB;

    @Test
    void anImportOverTcpDeliversExactlyTheExportedBytes() {
        try (InProcessRegistry registry = new InProcessRegistry();
             Engines e = new Engines(registry, 8, 10_000, false)) {
            int[] blocks = KvFixture.scattered(8, 1);
            e.a.fill(blocks, 8, 21);
            assertEquals(4, e.a.market.export(KvFixture.tokens(128, 21), 128, blocks).chunksPublished());
            Match m = e.b.market.match(KvFixture.tokens(128, 21), 128);
            assertEquals(128, m.tokens());
            int[] into = KvFixture.scattered(8, 2);
            LoadResult r = e.b.market.load(m, into).join();
            assertEquals(128, r.tokensImported(), r.toString());
            assertEquals("tcp", r.transports(), "the transport that delivered is named");
            assertEquals(-1, e.b.firstWrongBlock(into, 8, 21));
        }
    }

    /** Engines on devices whose memory the JVM cannot read (as GPUs): the import stages through both rings. */
    @Test
    void anImportBetweenDevicesTheJvmCannotReadStagesAndDeliversExactBytes() {
        try (InProcessRegistry registry = new InProcessRegistry();
             Engines e = new Engines(registry, 8, 10_000, true)) {
            int[] blocks = KvFixture.scattered(8, 3);
            e.a.fill(blocks, 8, 33);
            assertEquals(4, e.a.market.export(KvFixture.tokens(128, 33), 128, blocks).chunksPublished());
            Match m = e.b.market.match(KvFixture.tokens(128, 33), 128);
            int[] into = KvFixture.scattered(8, 4);
            LoadResult r = e.b.market.load(m, into).join();
            assertEquals(128, r.tokensImported(), r.toString());
            assertEquals("tcp", r.transports());
            assertEquals(-1, e.b.firstWrongBlock(into, 8, 33));
        }
    }

    /**
     * A pool of four chunks (two prompts) on the exporter, which keeps exporting new prompts (evicting) in another thread while
     * the importer, whose pins last 1 ms, pulls over TCP: imports may stop short, but every token reported imported
     * holds exactly the exported bytes.
     */
    @Test
    void underEvictionEveryImportedTokenIsExact() throws Exception {
        try (InProcessRegistry registry = new InProcessRegistry();
             Engines e = new Engines(registry, 4, 1, false)) {
            AtomicBoolean stop = new AtomicBoolean();
            Thread exporter = new Thread(() -> {
                Random rnd = new Random(3);
                while (!stop.get()) {
                    int salt = 100 + rnd.nextInt(6);
                    int[] blocks = KvFixture.scattered(4, salt);
                    e.a.fill(blocks, 4, salt);
                    e.a.market.export(KvFixture.tokens(64, salt), 64, blocks);
                    LockSupport.parkNanos(1_000_000); // room for pulls to finish, or nothing is ever proven
                }
            });
            exporter.start();
            Random rnd = new Random(4);
            int imported = 0;
            try {
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
                for (int round = 0; round < 400 || imported == 0 && System.nanoTime() < deadline; round++) {
                    int wanted = 100 + rnd.nextInt(6);
                    Match m = e.b.market.match(KvFixture.tokens(64, wanted), 64);
                    int[] into = KvPattern.range(32, 4);
                    LoadResult r = e.b.market.load(m, into).join();
                    int blocksImported = r.tokensImported() / KvFixture.LAYOUT.tokensPerBlock();
                    int wrong = e.b.firstWrongBlock(into, blocksImported, wanted);
                    assertEquals(-1, wrong, "round " + round + ": " + r + " delivered a wrong block " + wrong);
                    imported += r.tokensImported() > 0 ? 1 : 0;
                }
            } finally {
                stop.set(true);
                exporter.join();
            }
            assertTrue(imported > 0, "no import ever completed: the test would prove nothing");
        }
    }

    /** Two engines, each on its own device, TCP their only transport. */
    private final class Engines implements AutoCloseable {
        final Device devA;
        final Device devB;
        final TcpTransport tcpA;
        final TcpTransport tcpB;
        final KvFixture a;
        final KvFixture b;

        /**
         * @param pinLeaseMillis the importer's: 1 ms lets eviction race every pull
         * @param opaque         devices whose memory the JVM cannot read, staged through two 4 KiB slots
         */
        Engines(InProcessRegistry registry, int poolChunks, long pinLeaseMillis, boolean opaque) {
            devA = opaque ? new OpaqueDevice(new HostDevice(nodeA)) : new HostDevice(nodeA);
            devB = opaque ? new OpaqueDevice(new HostDevice(nodeB)) : new HostDevice(nodeB);
            tcpA = TcpTransport.open(devA, 1, TcpTransportContractTest.serving().withStaging(2, 4096));
            tcpB = TcpTransport.open(devB, 2, TcpTransportContractTest.serving().withStaging(2, 4096));
            long pool = poolChunks * KvFixture.chunkBytes(KvFixture.LAYOUT, KvFixture.CHUNK);
            a = new KvFixture(devA, DeviceBytes.HOST, false, registry, KvFixture.NS, t -> t,
                    builder -> builder.poolBytes(pool).transports(List.of(tcpA)));
            b = new KvFixture(devB, DeviceBytes.HOST, false, registry, KvFixture.NS, t -> t,
                    builder -> builder.poolBytes(pool).pinLeaseMillis(pinLeaseMillis).transports(List.of(tcpB)));
        }

        @Override
        public void close() {
            b.close();
            a.close();
            tcpB.close();
            tcpA.close();
            devB.close();
            devA.close();
        }
    }
}
