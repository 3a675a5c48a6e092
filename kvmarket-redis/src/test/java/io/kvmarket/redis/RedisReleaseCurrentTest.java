package io.kvmarket.redis;

import io.kvmarket.LoadResult;
import io.kvmarket.Match;
import io.kvmarket.MissReason;
import io.kvmarket.device.host.HostBuffer;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.Withdrawal;
import io.kvmarket.testkit.FaultyTransport;
import io.kvmarket.testkit.KvFixture;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.nio.ByteBuffer;
import java.time.Duration;

import static io.kvmarket.testkit.KvFixture.NS;
import static io.kvmarket.testkit.KvFixture.scattered;
import static io.kvmarket.testkit.KvFixture.tokens;
import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * On Redis the check after a load's copy is the unpin step's answer: a chunk withdrawn and overwritten after its
 * bytes landed is not counted and no pin stays; Redis stopped at the check is a miss.
 */
@Timeout(60)
class RedisReleaseCurrentTest extends RedisServerTest {

    @Test
    void aChunkWithdrawnAndOverwrittenAfterTheCopyIsNotCountedAndNoPinStays() throws Exception {
        RedisRegistry exporting = registry(Duration.ofSeconds(2));
        RedisRegistry importing = registry(Duration.ofSeconds(2));
        FaultyTransport[] importerSide = new FaultyTransport[1];
        try (KvFixture a = new KvFixture(dir, exporting, 8);
             KvFixture b = new KvFixture(dir, importing, 8, NS, t -> importerSide[0] = new FaultyTransport(t))) {
            int[] prompt = tokens(128, 4);
            int[] blocks = scattered(8, 4);
            a.fill(blocks, 8, 4);
            a.market.export(prompt, 128, blocks);
            ChunkKey[] keys = a.market.hasher().keys(prompt, 128);
            Offer[] offers = new Offer[4];
            for (int i = 0; i < 4; i++) {
                offers[i] = exporting.lookup(keys[i]);
            }
            Match m = b.market.match(prompt, 128);
            assertEquals(128, m.tokens());
            importerSide[0].afterFetch = o -> {
                exporting.withdraw(offers[1]);
                ByteBuffer pool = ((HostBuffer) a.market.pool().buffer()).memory();
                for (long i = offers[1].offset(); i < offers[1].offset() + offers[1].length(); i++) {
                    pool.put((int) i, (byte) 0x5a);
                }
            };
            LoadResult r = b.market.load(m, scattered(8, 6)).join();
            assertEquals(32, r.tokensImported(), r.toString());
            assertEquals(MissReason.SOURCE_CHANGED, r.reason());
            for (int i : new int[] {0, 2, 3}) {
                assertEquals(Withdrawal.WITHDRAWN, exporting.withdrawIfUnused(offers[i], Long.MAX_VALUE),
                        "chunk " + i + " still pinned");
            }
        }
    }

    @Test
    void redisStoppedAtTheCheckIsAMiss() throws Exception {
        RedisRegistry exporting = registry(Duration.ofSeconds(2));
        RedisRegistry importing = registry(Duration.ofMillis(300));
        FaultyTransport[] importerSide = new FaultyTransport[1];
        try (KvFixture a = new KvFixture(dir, exporting, 8);
             KvFixture b = new KvFixture(dir, importing, 8, NS, t -> importerSide[0] = new FaultyTransport(t))) {
            int[] prompt = tokens(64, 5);
            int[] blocks = scattered(4, 5);
            a.fill(blocks, 4, 5);
            a.market.export(prompt, 64, blocks);
            Match m = b.market.match(prompt, 64);
            assertEquals(64, m.tokens());
            importerSide[0].afterFetch = o -> server.pause();
            LoadResult r = b.market.load(m, scattered(4, 6)).join();
            server.resume();
            assertEquals(0, r.tokensImported(), r.toString());
        }
    }
}
