package io.kvmarket.transfer;

/**
 * A transport could not move a source's chunks; says why in the transfer taxonomy, and how many chunks of the
 * fetch, from the first, landed in full before it (a stream cut mid-way keeps its prefix).
 */
public class TransferException extends RuntimeException {

    private final TransferFailure failure;
    private final int chunksDelivered;

    public TransferException(TransferFailure failure, String message) {
        this(failure, message, null, 0);
    }

    public TransferException(TransferFailure failure, String message, Throwable cause) {
        this(failure, message, cause, 0);
    }

    /** @param chunksDelivered chunks of the fetch, from the first, whose every byte landed */
    public TransferException(TransferFailure failure, String message, Throwable cause, int chunksDelivered) {
        super(message, cause);
        if (chunksDelivered < 0) {
            throw new IllegalArgumentException("chunksDelivered " + chunksDelivered + " is negative");
        }
        this.failure = failure;
        this.chunksDelivered = chunksDelivered;
    }

    public TransferFailure failure() {
        return failure;
    }

    /** Chunks of the fetch, from the first, whose every byte landed before the failure. */
    public int chunksDelivered() {
        return chunksDelivered;
    }
}
