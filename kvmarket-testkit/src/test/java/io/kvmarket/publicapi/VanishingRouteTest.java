package io.kvmarket.publicapi;

import io.kvmarket.LoadResult;
import io.kvmarket.Match;
import io.kvmarket.MissReason;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.shm.NodeLocalRegistry;
import io.kvmarket.testkit.DeviceBytes;
import io.kvmarket.testkit.KvFixture;
import io.kvmarket.testkit.KvPattern;
import io.kvmarket.transfer.DeviceIpcTransport;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.fail;

@Timeout(60)
/** A transport's route that vanishes between match() and load() is a miss, never an exception. */
class VanishingRouteTest {

    @TempDir
    Path dir;

    /**
     * A transport's route vanishes between match() and load() (the case Importer.plan() handles with
     * "a user transport's route changed since match()"): load must complete with a miss, not throw.
     */
    @Test
    void aRouteThatVanishesBetweenMatchAndLoadIsAMissNotAnException() throws Exception {
        try (HostDevice device = new HostDevice(dir); NodeLocalRegistry registry = NodeLocalRegistry.open(dir, 64)) {
            long pool = 4 * KvFixture.chunkBytes(KvFixture.LAYOUT, KvFixture.CHUNK);
            TransportSpiTest.Custom flaky = new TransportSpiTest.Custom(new DeviceIpcTransport(device), Endpoint.DEVICE_IPC);
            try (KvFixture a = new KvFixture(device, DeviceBytes.HOST, false, registry, KvFixture.NS, t -> t,
                    b -> b.poolBytes(pool));
                 KvFixture b = new KvFixture(device, DeviceBytes.HOST, false, registry, KvFixture.NS, t -> t,
                         x -> x.poolBytes(pool).transports(List.of(flaky)))) {
                int[] blocks = KvPattern.range(0, 4);
                a.fill(blocks, 4, 3);
                a.market.export(KvFixture.tokens(64, 3), 64, blocks);
                Match m = b.market.match(KvFixture.tokens(64, 3), 64);
                assertEquals(64, m.tokens());
                flaky.route = o -> Optional.empty(); // the NIC went away
                LoadResult r;
                try {
                    r = b.market.load(m, KvPattern.range(10, 4)).get(10, TimeUnit.SECONDS);
                } catch (Exception e) {
                    fail("load() of a match whose route vanished failed instead of reporting a miss", e);
                    return;
                }
                assertEquals(0, r.tokensImported());
                assertNotEquals(MissReason.NONE, r.reason(), r.toString());
            }
        }
    }
}
