package io.kvmarket;

import io.kvmarket.transfer.PushTransport;
import io.kvmarket.transfer.Transport;

import java.nio.ByteBuffer;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.Arrays;
import java.util.concurrent.CompletableFuture;

/**
 * Prefill/decode handoffs between marketplaces: the KV of a prompt's blocks pushed from the prefill engine's cache
 * straight into blocks the decode engine opened, by a transport that can push (RDMA). Both sides name the same
 * spans in the same order, block by block and within a block region by region, so the receiver's spans and the
 * sender's pair up one to one; the ticket carries the receiver's namespace (model, revision, layout) and the
 * prompt's size, so KV of another model or layout is never written where this one's belongs.
 *
 * <pre>
 * ticket: "KVHO" (4) | SHA-256 of the namespace's canonical encoding (32) | tokens (4) | blocks (4)
 *         | the transport's ticket
 * </pre>
 */
final class Handoffs {

    private static final int MAGIC = 0x4B56484F; // "KVHO"
    private static final int HEADER = 4 + 32 + 4 + 4;

    private final MarketplaceContext ctx;
    /** Handoffs opened here and not yet over: the marketplace's close() withdraws them. */
    private final java.util.Set<Handoff> open = java.util.concurrent.ConcurrentHashMap.newKeySet();

    Handoffs(MarketplaceContext ctx) {
        this.ctx = ctx;
    }

    /** Withdraws every handoff still awaited: their pushes fail, their blocks are closed to writes. */
    void closeAll() {
        for (Handoff h : open) {
            h.close();
        }
    }

    Handoff expect(int[] blockIds, int tokens, long timeoutMillis) {
        int blocks = blocks(tokens);
        long[][] spans = spans(blockIds, blocks);
        PushTransport.PushTarget target = pusher().expectPush(ctx.kvCache().buffer(), spans[0], spans[1],
                timeoutMillis);
        byte[] inner = target.ticket();
        ByteBuffer b = ByteBuffer.allocate(HEADER + inner.length);
        b.putInt(MAGIC).put(namespaceDigest()).putInt(tokens).putInt(blocks).put(inner);
        Handoff h = new Handoff(b.array(), target);
        open.add(h);
        target.landed().whenComplete((ok, e) -> open.remove(h));
        return h;
    }

    CompletableFuture<Void> handOff(byte[] ticket, int[] blockIds, int tokens) {
        int blocks = blocks(tokens);
        if (ticket.length <= HEADER) {
            throw new IllegalArgumentException("a handoff ticket of " + ticket.length + " bytes is not one");
        }
        ByteBuffer b = ByteBuffer.wrap(ticket);
        byte[] digest = new byte[32];
        if (b.getInt() != MAGIC) {
            throw new IllegalArgumentException("not a handoff ticket");
        }
        b.get(digest);
        if (!MessageDigest.isEqual(digest, namespaceDigest())) {
            throw new IllegalArgumentException("the receiver's namespace (model, revision or KV layout) is not "
                    + ctx.namespace() + ": its KV would not be this engine's");
        }
        int theirTokens = b.getInt();
        int theirBlocks = b.getInt();
        if (theirTokens != tokens || theirBlocks != blocks) {
            throw new IllegalArgumentException("the receiver expects " + theirTokens + " tokens in " + theirBlocks
                    + " blocks, not " + tokens + " in " + blocks);
        }
        long[][] spans = spans(blockIds, blocks);
        return pusher().push(Arrays.copyOfRange(ticket, HEADER, ticket.length), ctx.kvCache().buffer(), spans[0]);
    }

    /** Blocks a handoff of {@code tokens} tokens spans (the last may be part full). */
    int blocks(int tokens) {
        if (tokens < 1) {
            throw new IllegalArgumentException("a handoff of " + tokens + " tokens");
        }
        return (tokens - 1) / ctx.namespace().layout().tokensPerBlock() + 1;
    }

    /** {offsets, lengths}: every region of every block, block by block. */
    private long[][] spans(int[] blockIds, int blocks) {
        int regions = ctx.namespace().layout().regionsPerBlock();
        long regionBytes = ctx.namespace().layout().regionBytes();
        if ((long) blocks * regions > Integer.MAX_VALUE) {
            throw new IllegalArgumentException(blocks + " blocks of " + regions + " regions are too many spans");
        }
        long[] offsets = new long[blocks * regions];
        long[] lengths = new long[offsets.length];
        for (int b = 0; b < blocks; b++) {
            for (int r = 0; r < regions; r++) {
                offsets[b * regions + r] = ctx.kvCache().regionOffset(blockIds[b], r);
                lengths[b * regions + r] = regionBytes;
            }
        }
        return new long[][] {offsets, lengths};
    }

    private PushTransport pusher() {
        for (Transport t : ctx.transports()) {
            if (t instanceof PushTransport p) {
                return p;
            }
        }
        throw new IllegalStateException("no transport of this marketplace hands KV off (a push needs RDMA: "
                + "kvmarket-rdma with verbs available)");
    }

    private byte[] namespaceDigest() {
        try {
            return MessageDigest.getInstance("SHA-256").digest(ctx.namespace().canonicalEncoding());
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 is missing from this JVM", e);
        }
    }
}
