package io.kvmarket.redis;

import io.kvmarket.LoadResult;
import io.kvmarket.Match;
import io.kvmarket.MissReason;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.NodeId;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.PublishOutcome;
import io.kvmarket.registry.RegistryException;
import io.kvmarket.testkit.ChildJvm;
import io.kvmarket.testkit.KvFixture;
import io.lettuce.core.RedisClient;
import io.lettuce.core.api.StatefulRedisConnection;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

import static io.kvmarket.testkit.KvFixture.scattered;
import static io.kvmarket.testkit.KvFixture.tokens;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Faults injected for real into a real redis-server: killed, stopped, restarted, foreign data, a dead owner. */
@Timeout(60)
class RedisFaultsTest extends RedisServerTest {



    static Offer offer(long k, long generation) {
        return Offer.of(new ChunkKey(k, k * 31), NodeId.local(), ProcessIdentity.current(),
                new Endpoint(Endpoint.DEVICE_IPC, new byte[] {7, (byte) generation}), 0, 64, 1, generation,
                System.currentTimeMillis() + 60_000);
    }

    @Test
    void aKilledRedisFailsEveryCallQuicklyAndTheRegistryRecoversWhenItIsBack() throws Exception {
        try (RedisRegistry r = registry(Duration.ofMillis(100))) {
            assertEquals(PublishOutcome.PUBLISHED, r.publish(offer(1, 1)));
            server.kill();
            long t0 = System.nanoTime();
            assertThrows(RegistryException.class, () -> r.lookup(offer(1, 1).key()));
            long failedAfterMs = (System.nanoTime() - t0) / 1_000_000;
            assertTrue(failedAfterMs < 2_000, "a lookup against a dead Redis took " + failedAfterMs + " ms");
            assertThrows(RegistryException.class, () -> r.publish(offer(2, 1)));
            server.restart();
            long deadline = System.nanoTime() + Duration.ofSeconds(20).toNanos();
            PublishOutcome back = null;
            while (back == null && System.nanoTime() < deadline) {
                try {
                    back = r.publish(offer(2, 1));
                } catch (RegistryException stillDown) {
                    Thread.sleep(100);
                }
            }
            assertEquals(PublishOutcome.PUBLISHED, back, "the registry reconnected by itself");
            assertNull(r.lookup(offer(1, 1).key()), "a restarted Redis without persistence holds nothing");
        }
    }

    @Test
    void aStoppedRedisIsAFailureWithinTheCommandTimeoutAndServesAgainWhenResumed() throws Exception {
        try (RedisRegistry r = registry(Duration.ofMillis(100))) {
            assertEquals(PublishOutcome.PUBLISHED, r.publish(offer(3, 1)));
            server.pause();
            try {
                long t0 = System.nanoTime();
                assertThrows(RegistryException.class, () -> r.lookup(offer(3, 1).key()));
                long failedAfterMs = (System.nanoTime() - t0) / 1_000_000;
                assertTrue(failedAfterMs < 2_000, "a lookup against a stopped Redis took " + failedAfterMs + " ms");
            } finally {
                server.resume();
            }
            Offer back = null;
            long deadline = System.nanoTime() + Duration.ofSeconds(10).toNanos();
            while (back == null && System.nanoTime() < deadline) {
                try {
                    back = r.lookup(offer(3, 1).key());
                } catch (RegistryException draining) {
                    Thread.sleep(50);
                }
            }
            assertEquals(offer(3, 1).generation(), back.generation());
        }
    }

    @Test
    void foreignValuesAreSkippedAndReplacedNeverTrusted() {
        try (RedisRegistry r = registry(Duration.ofSeconds(2));
             RedisClient raw = RedisClient.create(server.uri());
             StatefulRedisConnection<String, String> c = raw.connect()) {
            Offer o = offer(4, 1);
            String key = OfferCodec.hashKey(prefix, o.key());
            c.sync().set(key, "99999999999999,0,0,0;not an offer");
            assertNull(r.lookup(o.key()), "foreign bytes are no offer");
            assertEquals(PublishOutcome.PUBLISHED, r.publish(o), "and do not block the key");
            c.sync().setrange(key, 0, "soon");
            assertNull(r.lookup(o.key()), "a damaged lease is no offer either");
            c.sync().hset(OfferCodec.hashKey(prefix, offer(5, 1).key()), "o", "a hash, not a record");
            assertNull(r.lookup(offer(5, 1).key()), "a key of the wrong type is skipped");
            assertEquals(PublishOutcome.PUBLISHED, r.publish(offer(5, 1)), "and replaced by a publication");
        }
    }

    @Test
    void offersOfAKilledOwnerStopBeingServedWithinTheOwnerTtl() throws Exception {
        ChunkKey key = new ChunkKey(1, 2);
        try (RedisRegistry r = RedisRegistry.open(server.uri(), prefix);
             ChildJvm owner = ChildJvm.start(RedisOwnerProcess.class, server.uri(), prefix)) {
            assertEquals("READY true", owner.awaitLine("READY", Duration.ofSeconds(30)));
            assertNotNull(r.lookup(key), "served while its owner lives");
            Thread.sleep(RedisRegistry.OWNER_TTL_MS); // heartbeats keep it alive past one TTL
            assertNotNull(r.lookup(key));
            owner.kill();
            Thread.sleep(RedisRegistry.OWNER_TTL_MS + RedisRegistry.LIVENESS_CACHE_MS + 100);
            assertNull(r.lookup(key), "the dead owner's offer is still served");
            Offer mine = Offer.of(key, NodeId.local(), ProcessIdentity.current(),
                    new Endpoint(Endpoint.TCP, new byte[] {2}), 0, 64, 1, 2, r.clockMillis() + 60_000);
            assertEquals(PublishOutcome.PUBLISHED, r.publish(mine), "the dead owner's key is taken over");
        }
    }

    /** Cold JVMs opening together once failed their handshake, which was held to the 100 ms command bound. */
    @Test
    void severalProcessesStartingTogetherAllOpen() throws Exception {
        List<ChildJvm> owners = new ArrayList<>();
        try {
            for (int i = 0; i < 4; i++) {
                owners.add(ChildJvm.start(RedisOwnerProcess.class, server.uri(), prefix));
            }
            for (ChildJvm owner : owners) {
                assertTrue(owner.awaitLine("READY", Duration.ofSeconds(60)).startsWith("READY "));
            }
        } finally {
            owners.forEach(ChildJvm::close);
        }
    }

    @Test
    void twoEnginesShareKvThroughRedisAndRedisDownIsAMissNotAFailure() throws Exception {
        try (RedisRegistry ra = registry(Duration.ofMillis(500)); RedisRegistry rb = registry(Duration.ofMillis(500));
             KvFixture a = new KvFixture(dir, ra, 4); KvFixture b = new KvFixture(dir, rb, 4)) {
            int[] t = tokens(64, 9);
            int[] src = scattered(4, 9);
            a.fill(src, 4, 9);
            assertEquals(2, a.market.export(t, 64, src).chunksPublished());
            Match m = b.market.match(t, 64);
            assertEquals(64, m.tokens());
            int[] dst = scattered(4, 10);
            LoadResult loaded = b.market.load(m, dst).join();
            assertEquals(64, loaded.tokensImported());
            assertArrayEquals(a.kvBytes(src, 4), b.kvBytes(dst, 4));
            server.pause();
            try {
                Match down = b.market.match(t, 64);
                assertEquals(0, down.tokens());
                assertEquals(MissReason.REGISTRY_UNAVAILABLE, down.reason());
                assertEquals(0, a.market.export(tokens(64, 11), 64, src).chunksPublished(), "skipped, not thrown");
            } finally {
                server.resume();
            }
        }
    }

    @Test
    void afterRedisRestartsEmptyLiveExportersOfferWhatTheyHoldAgain() throws Exception {
        try (RedisRegistry ra = registry(Duration.ofMillis(500)); RedisRegistry rb = registry(Duration.ofMillis(500));
             KvFixture a = new KvFixture(new io.kvmarket.device.host.HostDevice(dir), io.kvmarket.testkit.DeviceBytes.HOST,
                     true, ra, KvFixture.NS, x -> x, c -> c.poolBytes(4 * KvFixture.chunkBytes(KvFixture.LAYOUT,
                             KvFixture.CHUNK)).offerLeaseMillis(300));
             KvFixture b = new KvFixture(dir, rb, 4)) {
            int[] t = tokens(64, 12);
            int[] src = scattered(4, 12);
            a.fill(src, 4, 12);
            assertEquals(2, a.market.export(t, 64, src).chunksPublished());
            b.market.release(b.market.match(t, 64)); // b's scripts are loaded into the Redis about to restart
            server.restart();
            Match m = null;
            long deadline = System.nanoTime() + Duration.ofSeconds(20).toNanos();
            while ((m == null || m.tokens() < 64) && System.nanoTime() < deadline) {
                if (m != null) {
                    b.market.release(m);
                }
                Thread.sleep(100);
                m = b.market.match(t, 64);
            }
            assertEquals(64, m.tokens(), "a's renewals found its offers gone and offered them again");
            int[] dst = scattered(4, 13);
            assertEquals(64, b.market.load(m, dst).join().tokensImported());
            assertArrayEquals(a.kvBytes(src, 4), b.kvBytes(dst, 4));
        }
    }

    @Test
    void theProviderIsUnavailableUntilRedisIsConfigured() {
        RedisRegistryProvider p = new RedisRegistryProvider();
        assertEquals(io.kvmarket.registry.RegistryScope.CLUSTER, p.scope());
        assertTrue(p.unavailabilityCause().isPresent(), "no URI is configured in these tests");
        assertTrue(p.unavailabilityCause().get().getMessage().contains(RedisRegistryProvider.URI_PROPERTY));
        assertEquals(List.of("redis", "node-local", "in-process"), io.kvmarket.registry.Registries.providers().stream()
                .map(io.kvmarket.registry.RegistryProvider::name).toList());
    }
}
