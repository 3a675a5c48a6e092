package io.kvmarket.device;

import java.nio.ByteBuffer;
import java.util.Optional;
import java.util.OptionalLong;
import java.util.concurrent.CompletableFuture;

/**
 * The GPU as the marketplace needs it: memory, IPC handles that let another process on the node map that memory,
 * and one batched asynchronous copy of many segments. The host device implements it with shared-memory files;
 * a CUDA runtime implements it with cudaMalloc, cudaIpc*MemHandle and a batched copy.
 */
public interface Device extends AutoCloseable {

    /** Human-readable name, e.g. {@code host:/dev/shm/kvmarket-alice} or {@code cuda:0 NVIDIA H100}. */
    String name();

    /**
     * Allocates device memory, zeroed.
     *
     * @throws IllegalArgumentException for a size the device can never provide (non-positive, over its limit)
     * @throws DeviceException          when memory runs out
     */
    DeviceBuffer allocate(long bytes);

    /** Frees memory allocated by {@link #allocate}. Peers that mapped it keep reading what they mapped or fail. */
    void free(DeviceBuffer buffer);

    /** An opaque handle another process on this node passes to {@link #openHandle} to map this buffer. */
    byte[] exportHandle(DeviceBuffer buffer);

    /**
     * Maps a buffer from its handle. A handle of this process's own allocation returns that allocation.
     *
     * @throws IllegalArgumentException when the bytes are not a handle of this device kind (malformed, truncated)
     * @throws DeviceException          when the allocation is gone (its owner freed it or died)
     */
    DeviceBuffer openHandle(byte[] handle);

    /** Unmaps a buffer returned by {@link #openHandle}; a no-op for this process's own allocations. */
    void closeHandle(DeviceBuffer mapped);

    /**
     * Copies every segment of {@code batch} from {@code src} to {@code dst} as one submission. Bounds are checked
     * for all segments before any byte moves.
     *
     * @return completes when every segment has landed, or exceptionally with a {@link DeviceException}
     * @throws IllegalArgumentException when a segment falls outside either buffer
     */
    CompletableFuture<Void> copy(DeviceBuffer src, DeviceBuffer dst, CopyBatch batch);

    /** True when this JVM reads and writes the device's memory in place through {@link #hostView}; false for a GPU. */
    default boolean isHostAddressable() {
        return false;
    }

    /**
     * Host memory this device's {@link #copy} moves to and from like its own (pinned for a GPU), which the JVM reads
     * and writes through {@link #hostView}: where memory only the device reaches meets a socket. Freed by
     * {@link #free}; it has no IPC handle.
     *
     * @throws UnsupportedOperationException when the device has none
     * @throws DeviceException               when memory runs out
     */
    default DeviceBuffer allocateStaging(long bytes) {
        if (isHostAddressable()) {
            return allocate(bytes);
        }
        throw new UnsupportedOperationException(name() + " has no staging memory");
    }

    /**
     * The buffer's memory as this JVM reads and writes it in place, for transports that move it through a socket
     * without a staging copy; empty when only the device reaches it (GPU memory), present for staging memory. Position 0 is the buffer's first
     * byte; the view is the caller's own (independent position and limit).
     *
     * @throws IllegalArgumentException when the buffer is not this device's
     */
    default Optional<ByteBuffer> hostView(DeviceBuffer buffer) {
        return Optional.empty();
    }

    /**
     * The buffer's device pointer, for a NIC that reads or writes GPU memory itself (RDMA with GPUDirect); empty for
     * memory the JVM addresses (a NIC registers it through {@link #hostView}), or when the device cannot say.
     *
     * @throws IllegalArgumentException when the buffer is not this device's
     */
    default OptionalLong deviceAddress(DeviceBuffer buffer) {
        return OptionalLong.empty();
    }

    @Override
    void close();
}
