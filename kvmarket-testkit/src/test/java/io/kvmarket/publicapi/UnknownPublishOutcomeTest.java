package io.kvmarket.publicapi;

import io.kvmarket.ExportResult;
import io.kvmarket.Match;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.registry.InProcessRegistry;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.registry.PublishOutcome;
import io.kvmarket.registry.RegistryException;
import io.kvmarket.registry.Withdrawal;
import io.kvmarket.testkit.KvFixture;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.List;

import static io.kvmarket.testkit.KvFixture.scattered;
import static io.kvmarket.testkit.KvFixture.tokens;
import static org.junit.jupiter.api.Assertions.assertEquals;

/** A publish whose outcome is unknown counts as done: the exporter keeps the chunk, once, and offers it again. */
@Timeout(60)
class UnknownPublishOutcomeTest {

    @TempDir
    Path dir;

    /** Delegates to an in-process registry; publish throws while {@code failPublish} (a timed-out write). */
    static final class Flaky implements OfferRegistry {
        final InProcessRegistry d = new InProcessRegistry();
        volatile boolean failPublish;

        @Override public PublishOutcome publish(Offer o) {
            if (failPublish) {
                throw new RegistryException("publish timed out (outcome unknown)");
            }
            return d.publish(o);
        }
        @Override public List<Offer> lookupPrefix(ChunkKey[] k, int m) { return d.lookupPrefix(k, m); }
        @Override public Offer lookup(ChunkKey k) { return d.lookup(k); }
        @Override public boolean pin(Offer o, long l) { return d.pin(o, l); }
        @Override public void unpin(Offer o) { d.unpin(o); }
        @Override public boolean isCurrent(Offer o) { return d.isCurrent(o); }
        @Override public Withdrawal withdrawIfUnused(Offer o, long u) { return d.withdrawIfUnused(o, u); }
        @Override public void withdraw(Offer o) { d.withdraw(o); }
        @Override public long clockMillis() { return d.clockMillis(); }
        @Override public boolean renew(Offer o, long e) { return d.renew(o, e); }
        @Override public void close() { d.close(); }
    }

    /**
     * The publish never landed; the registry answers again and the engine exports the same prompt: the kept chunk
     * is offered again, not copied into a second slot (the pool once held it twice, wasting a slot).
     */
    @Test
    void aReexportAfterAnUnknownOutcomeHoldsTheChunkOnce() {
        try (Flaky registry = new Flaky(); KvFixture a = new KvFixture(dir, registry, 2)) {
            int[] t = tokens(32, 51);
            int[] src = scattered(2, 51);
            a.fill(src, 2, 51);
            registry.failPublish = true;
            ExportResult first = a.market.export(t, 32, src);
            assertEquals(1, first.chunksSkipped());
            registry.failPublish = false;
            ExportResult second = a.market.export(t, 32, src);
            assertEquals(1, second.chunksPublished() + second.chunksAlreadyOffered());
            assertEquals(1, a.market.pool().publishedChunks(), "one key, one prompt: the pool holds "
                    + a.market.pool().publishedChunks() + " chunks of it");
        }
    }

    /** The kept chunk of an unknown outcome, once the registry is back, is found and imported byte-exact. */
    @Test
    void theKeptChunkIsNeverServedWithOtherBytes() {
        try (Flaky registry = new Flaky(); KvFixture a = new KvFixture(dir, registry, 1);
             KvFixture b = new KvFixture(dir, registry, 2)) {
            int[] t1 = tokens(32, 61);
            int[] t2 = tokens(32, 62);
            int[] src = scattered(2, 61);
            a.fill(src, 2, 61);
            registry.failPublish = true;
            a.market.export(t1, 32, src);
            registry.failPublish = false;
            a.fill(src, 2, 62);
            a.market.export(t2, 32, src); // evicts the phantom (pool of one), reuses its memory for P2's bytes
            Match m = b.market.match(t1, 32);
            if (m.tokens() > 0) {
                int[] dst = scattered(2, 63);
                b.market.load(m, dst).join();
                assertEquals(-1, b.firstWrongBlock(dst, 2, 61), "P1 served with other bytes");
            } else {
                b.market.release(m);
            }
        }
    }
}
