package io.kvmarket.testkit;

import io.kvmarket.device.Device;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.transfer.ServedPool;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * A {@link ServedPool} over one buffer whose published chunks the test names, for transport tests that run without
 * a marketplace: it publishes whatever span it is told (even one past its buffer, as a damaged offer would name),
 * and counts the holds a transport takes and releases.
 */
public final class PublishedChunks implements ServedPool {

    private record Chunk(ChunkKey key, long generation, long offset, long length) {
    }

    private final Device device;
    private final DeviceBuffer buffer;
    private final Map<ChunkKey, Chunk> published = new HashMap<>();
    private final AtomicInteger holdsOpen = new AtomicInteger();
    private final AtomicInteger holdsTaken = new AtomicInteger();
    private final Map<Object, Runnable> memoryHolds = new HashMap<>();
    private boolean closed;
    private boolean freed;

    public PublishedChunks(Device device, DeviceBuffer buffer) {
        this.device = device;
        this.buffer = buffer;
    }

    @Override
    public DeviceBuffer buffer() {
        return buffer;
    }

    public synchronized void publish(ChunkKey key, long generation, long offset, long length) {
        published.put(key, new Chunk(key, generation, offset, length));
    }

    public synchronized void withdraw(ChunkKey key) {
        published.remove(key);
    }

    /**
     * Withdraws everything, runs what memory holds asked for, and frees the buffer once no memory hold is left, as a
     * closing exporter's pool does.
     */
    public void close() {
        List<Runnable> onClose;
        synchronized (this) {
            if (closed) {
                return;
            }
            closed = true;
            published.clear();
            onClose = new ArrayList<>(memoryHolds.values());
            freeIfUnheld();
        }
        onClose.forEach(Runnable::run);
    }

    @Override
    public synchronized Hold holdMemory(Runnable onClose) {
        if (closed) {
            return null;
        }
        Object token = new Object();
        memoryHolds.put(token, onClose);
        return () -> {
            synchronized (this) {
                if (memoryHolds.remove(token) != null) {
                    freeIfUnheld();
                }
            }
        };
    }

    /** Memory holds taken and not yet released. */
    public synchronized int memoryHoldsOpen() {
        return memoryHolds.size();
    }

    /** True once the buffer is freed: closed, and no memory hold left. */
    public synchronized boolean freed() {
        return freed;
    }

    private void freeIfUnheld() {
        if (closed && !freed && memoryHolds.isEmpty()) {
            freed = true;
            device.free(buffer);
        }
    }

    @Override
    public synchronized Hold hold(ChunkKey key, long generation, long offset, long length) {
        Chunk c = published.get(key);
        if (closed || c == null || c.generation != generation || c.offset != offset || c.length != length) {
            return null;
        }
        holdsOpen.incrementAndGet();
        holdsTaken.incrementAndGet();
        boolean[] released = new boolean[1];
        return () -> {
            synchronized (released) {
                if (!released[0]) {
                    released[0] = true;
                    holdsOpen.decrementAndGet();
                }
            }
        };
    }

    @Override
    public synchronized boolean isClosed() {
        return closed;
    }

    /** Holds taken and not yet released. */
    public int holdsOpen() {
        return holdsOpen.get();
    }

    /** Holds ever taken. */
    public int holdsTaken() {
        return holdsTaken.get();
    }
}
