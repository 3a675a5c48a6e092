package io.kvmarket.transfer.tcp;

import io.kvmarket.device.Device;
import io.kvmarket.device.DeviceBuffer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.TimeUnit;

/**
 * A bounded ring of the device's staging memory (pinned host memory for a GPU): the only host memory KV passes
 * through when the device's own memory is out of the JVM's reach. A transfer takes a slot, has the device copy a
 * window of a chunk into it (or out of it) in one batched call, and moves the window through the socket; every
 * connection shares the ring, so staging memory stays {@code slots x slotBytes} however many transfers run.
 */
final class StagingRing implements AutoCloseable {

    private static final Logger LOG = LoggerFactory.getLogger(StagingRing.class);

    /** One slot: its staging buffer on the device, and the same memory as the JVM sees it. */
    record Slot(DeviceBuffer buffer, ByteBuffer view) {
    }

    private final Device device;
    private final List<Slot> all = new ArrayList<>();
    private final BlockingQueue<Slot> free;
    private volatile boolean closed;

    /**
     * @throws UnsupportedOperationException when the device has no staging memory
     */
    StagingRing(Device device, int slots, int slotBytes) {
        this.device = device;
        this.free = new ArrayBlockingQueue<>(slots);
        try {
            for (int i = 0; i < slots; i++) {
                DeviceBuffer b = device.allocateStaging(slotBytes);
                Slot s = new Slot(b, device.hostView(b).orElseThrow(
                        () -> new IllegalStateException(device.name() + " gave staging memory the JVM cannot see")));
                all.add(s);
                free.add(s);
            }
        } catch (RuntimeException e) {
            close();
            throw e;
        }
    }

    int slotBytes() {
        return all.get(0).view.capacity();
    }

    /**
     * A free slot, waiting at most {@code waitMillis} for one.
     *
     * @throws IOException when none frees up in time, or the wait is interrupted (the transport closing)
     */
    Slot acquire(long waitMillis) throws IOException {
        if (closed) {
            throw new IOException("staging ring closed");
        }
        try {
            Slot s = free.poll(waitMillis, TimeUnit.MILLISECONDS);
            if (s == null) {
                throw new IOException("no staging slot free within " + waitMillis + " ms");
            }
            return s;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted waiting for a staging slot", e);
        }
    }

    /** Returns a slot; after {@link #close} its memory is freed and it is dropped. */
    void release(Slot s) {
        if (!closed) {
            free.add(s);
        }
    }

    /** Frees the staging memory; call once no transfer uses the ring any more. */
    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        for (Slot s : all) {
            try {
                device.free(s.buffer);
            } catch (RuntimeException e) { // the device closed first, and freed it with everything else
                LOG.debug("staging slot not freed: {}", e.toString());
            }
        }
        all.clear();
        free.clear();
    }
}
