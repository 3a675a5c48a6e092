package io.kvmarket.transfer;

/** A transport could not move a source's chunks; says why in the transfer taxonomy. */
public class TransferException extends RuntimeException {

    private final TransferFailure failure;

    public TransferException(TransferFailure failure, String message) {
        super(message);
        this.failure = failure;
    }

    public TransferException(TransferFailure failure, String message, Throwable cause) {
        super(message, cause);
        this.failure = failure;
    }

    public TransferFailure failure() {
        return failure;
    }
}
