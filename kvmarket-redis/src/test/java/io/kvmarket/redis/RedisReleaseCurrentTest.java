package io.kvmarket.redis;

import io.kvmarket.LoadResult;
import io.kvmarket.Match;
import io.kvmarket.testkit.CheckAfterCopy;
import io.kvmarket.testkit.FaultyTransport;
import io.kvmarket.testkit.KvFixture;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

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
    void aChunkWithdrawnAndOverwrittenAfterTheCopyIsNotCountedAndNoPinStays() {
        CheckAfterCopy.aChunkWithdrawnAndOverwrittenAfterTheCopyIsNotCountedAndNoPinStays(dir,
                registry(Duration.ofSeconds(2)), registry(Duration.ofSeconds(2)));
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
