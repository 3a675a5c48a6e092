package io.kvmarket.nativecopy;

/**
 * A native copy call failed at run time (CUDA error, host allocation failure). Carries the native code
 * and, for CUDA failures, the {@code cudaError_t} value; the message holds CUDA's name and description.
 * Callers on the import path turn it into a miss.
 */
public final class NativeCopyException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    /** {@link #cudaError()} of a failure that did not come from CUDA. */
    public static final int NOT_CUDA = -1;

    private final String operation;
    private final int code;
    private final int cudaError;

    NativeCopyException(String operation, int code, int cudaError, String message) {
        super(message);
        this.operation = operation;
        this.code = code;
        this.cudaError = cudaError;
    }

    /** The native call that failed, e.g. {@code cudaMemcpyBatchAsync}. */
    public String operation() {
        return operation;
    }

    /** The negative code the native layer returned (see {@code kvm_copy.h}). */
    public int code() {
        return code;
    }

    /** The {@code cudaError_t} value, or {@link #NOT_CUDA}. */
    public int cudaError() {
        return cudaError;
    }

    public boolean isCudaError() {
        return cudaError != NOT_CUDA;
    }
}
