package io.kvmarket.transfer;

import io.kvmarket.device.DeviceBuffer;

import java.util.concurrent.CompletableFuture;

/**
 * A transport that hands KV to a chosen peer (a prefill server feeding a decode server), beside the pulls every
 * transport does for shared prefixes. The receiver opens its destination spans for one push and gets a ticket; the
 * engine passes the ticket to the sender (through its router or its own RPC); the sender writes its spans into them
 * and the receiver learns of completion from the transport itself, not from a message that could overtake the
 * bytes.
 */
public interface PushTransport {

    /**
     * Receiver: opens {@code lengths[i]} bytes at {@code dstOffsets[i]} of {@code dst}, and nothing else, to one
     * push until it lands or {@code timeoutMillis} pass.
     *
     * @throws IllegalArgumentException for spans outside {@code dst}, empty, overlapping, or arrays that differ in
     *                                  length
     * @throws IllegalStateException    when this transport takes no pushes (it serves nothing) or is closed
     */
    PushTarget expectPush(DeviceBuffer dst, long[] dstOffsets, long[] lengths, long timeoutMillis);

    /**
     * Sender: writes {@code src} at {@code srcOffsets[i]} into span {@code i} of the ticket's target, each as long as
     * the target's span. Runtime failures complete the future exceptionally with a {@link TransferException}.
     *
     * @throws IllegalArgumentException for a ticket that is not one of this transport's, a span count that differs
     *                                  from the ticket's, or spans outside {@code src}
     * @throws IllegalStateException    when the transport is closed
     */
    CompletableFuture<Void> push(byte[] ticket, DeviceBuffer src, long[] srcOffsets);

    /** Spans opened to one push. Closing it before the push landed withdraws them; the push then fails. */
    interface PushTarget extends AutoCloseable {

        /** What the sender needs: where to connect and write, and the proof that it was invited. */
        byte[] ticket();

        /**
         * Completes when every byte of the push has landed, or exceptionally with a {@link TransferException} when
         * the timeout passed, the sender failed, or the target was closed first. The spans are closed either way.
         */
        CompletableFuture<Void> landed();

        @Override
        void close();
    }
}
