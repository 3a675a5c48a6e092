package io.kvmarket.transfer.rdma;

/** A verbs call failed at run time: which, with the shim's code and description. */
public final class VerbsException extends RuntimeException {

    private final int code;

    VerbsException(String call, int code, String name, String detail) {
        super(call + " failed: " + name + (detail == null || detail.isEmpty() ? "" : " (" + detail + ")"));
        this.code = code;
    }

    /** The shim's negative code. */
    public int code() {
        return code;
    }
}
