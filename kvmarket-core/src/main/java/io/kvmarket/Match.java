package io.kvmarket;

import io.kvmarket.registry.Offer;

import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * What {@link KvMarketplace#match} found: how many prompt tokens can be imported, with the offers pinned for a
 * short lease. Copies nothing. Hand it to {@link KvMarketplace#load} or {@link KvMarketplace#release}.
 */
public final class Match {

    private final List<Offer> offers;
    private final int tokens;
    private final int chunkTokens;
    private final MissReason reason;
    final AtomicBoolean released = new AtomicBoolean();
    /** The marketplace that pinned the offers: only it may load or release them. */
    final Object issuer;

    Match(Object issuer, List<Offer> offers, int chunkTokens, MissReason reason) {
        this.issuer = issuer;
        this.offers = List.copyOf(offers);
        this.tokens = offers.size() * chunkTokens;
        this.chunkTokens = chunkTokens;
        this.reason = reason;
    }

    /** Prompt tokens that can be imported: a multiple of the chunk size, possibly 0. */
    public int tokens() {
        return tokens;
    }

    public int chunks() {
        return offers.size();
    }

    public int chunkTokens() {
        return chunkTokens;
    }

    /** Why the match stopped where it did ({@link MissReason#NONE} when every full chunk matched). */
    public MissReason reason() {
        return reason;
    }

    List<Offer> offers() {
        return offers;
    }

    @Override
    public String toString() {
        return "Match[" + tokens + " tokens, " + reason + "]";
    }
}
