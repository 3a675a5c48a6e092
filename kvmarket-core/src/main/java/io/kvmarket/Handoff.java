package io.kvmarket;

import io.kvmarket.transfer.PushTransport;

import java.util.concurrent.CompletableFuture;

/**
 * The decode side of a prefill/decode handoff: blocks of this engine opened to one push of a prompt's KV. Give
 * {@link #ticket()} to the prefill server (through the router, or the engines' own RPC); it calls
 * {@link KvMarketplace#handOff} with it, and {@link #landed()} completes when every byte is in the blocks. Close it
 * to withdraw the blocks before the push came (a cancelled request); it is closed by itself once the push landed,
 * failed or timed out.
 */
public final class Handoff implements AutoCloseable {

    private final byte[] ticket;
    private final PushTransport.PushTarget target;

    Handoff(byte[] ticket, PushTransport.PushTarget target) {
        this.ticket = ticket;
        this.target = target;
    }

    /** What the prefill server passes to {@link KvMarketplace#handOff}: opaque, single use. */
    public byte[] ticket() {
        return ticket.clone();
    }

    /**
     * Completes when the pushed KV is in the blocks, or exceptionally with a
     * {@link io.kvmarket.transfer.TransferException} (timed out, the sender failed, closed first): then prefill the
     * prompt here instead.
     */
    public CompletableFuture<Void> landed() {
        return target.landed();
    }

    @Override
    public void close() {
        target.close();
    }
}
