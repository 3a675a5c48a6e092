package io.kvmarket.transfer;

import io.kvmarket.MissReason;

/** A transport could not move a source's chunks; carries the miss reason the import reports. */
public class TransferException extends RuntimeException {

    private final MissReason reason;

    public TransferException(MissReason reason, String message) {
        super(message);
        this.reason = reason;
    }

    public TransferException(MissReason reason, String message, Throwable cause) {
        super(message, cause);
        this.reason = reason;
    }

    public MissReason reason() {
        return reason;
    }
}
