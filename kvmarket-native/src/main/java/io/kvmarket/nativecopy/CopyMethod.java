package io.kvmarket.nativecopy;

/** How {@link NativeCopy#copyBatch} moves the segments of one batch. */
public enum CopyMethod {
    /** One {@code cudaMemcpyBatchAsync} call, device-to-device, source read in stream order. */
    MEMCPY_BATCH("cudaMemcpyBatchAsync"),
    /**
     * One upload of the segment table and one launch of a gather/scatter copy kernel (16-byte vector
     * loads and stores where source and destination are 16-byte aligned, bytes otherwise).
     */
    GATHER_KERNEL("gather copy kernel");

    private final String operation;

    CopyMethod(String operation) {
        this.operation = operation;
    }

    /** What the native side calls, for error messages. */
    String operation() {
        return operation;
    }
}
