package io.kvmarket.transfer;

import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.key.ChunkKey;

/**
 * An export pool as the transports that serve it from elsewhere see it: its memory, and which chunks it publishes
 * now. A network transport serves a span only while it {@linkplain #hold holds} it, so it never streams an
 * arbitrary offset, nor memory the pool is reusing for another chunk.
 */
public interface ServedPool {

    /** The pool's memory; chunk offsets are relative to it. */
    DeviceBuffer buffer();

    /**
     * Holds the chunk in place when this pool publishes {@code key} under {@code generation} at exactly
     * {@code [offset, offset + length)}: until the hold is closed the pool neither evicts it nor reuses or frees
     * its memory.
     *
     * @return the hold, or null when the pool does not publish that chunk there now (evicted, withdrawn, closed,
     *         never)
     */
    Hold hold(ChunkKey key, long generation, long offset, long length);

    /**
     * Keeps the pool's memory allocated, not its chunks in place, until the hold is closed: for a transport that
     * lets a NIC read the pool by itself (RDMA), whose registration must end before the memory is freed. When the
     * pool closes it runs {@code onClose} once (on the closing thread, outside its lock), so the holder can end its
     * use and close the hold; a closed pool frees its memory when the last hold ends.
     *
     * @return the hold, or null when the pool is closed already
     */
    Hold holdMemory(Runnable onClose);

    /** True once the pool is closed: it publishes nothing any more, and a transport may forget it. */
    boolean isClosed();

    /** A chunk held in place; close it when its bytes are sent. Idempotent. */
    interface Hold extends AutoCloseable {
        @Override
        void close();
    }
}
