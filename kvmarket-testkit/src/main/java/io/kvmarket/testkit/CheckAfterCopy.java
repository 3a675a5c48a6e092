package io.kvmarket.testkit;

import io.kvmarket.LoadResult;
import io.kvmarket.Match;
import io.kvmarket.MissReason;
import io.kvmarket.device.host.HostBuffer;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.registry.Withdrawal;

import java.nio.ByteBuffer;
import java.nio.file.Path;

import static io.kvmarket.testkit.KvFixture.NS;
import static io.kvmarket.testkit.KvFixture.scattered;
import static io.kvmarket.testkit.KvFixture.tokens;
import static org.junit.jupiter.api.Assertions.assertEquals;

/** The check after a load's copy, as every registry must make it: the same scenario for each. */
public final class CheckAfterCopy {

    private CheckAfterCopy() {
    }

    /**
     * An exporter on {@code exporting} offers four chunks; an importer on {@code importing} matches them, and once its
     * bytes landed the second chunk is withdrawn and its pool memory overwritten: only the first chunk counts, as
     * {@code SOURCE_CHANGED}, and no pin of the load stays on the others.
     */
    public static void aChunkWithdrawnAndOverwrittenAfterTheCopyIsNotCountedAndNoPinStays(
            Path dir, OfferRegistry exporting, OfferRegistry importing) {
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
                        "chunk " + i + " still pinned after the load");
            }
        }
    }
}
