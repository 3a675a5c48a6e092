package io.kvmarket.device.host;

import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.device.DeviceException;
import io.kvmarket.node.ProcessIdentity;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;

/** Host device memory: a mapped shared-memory file, owned by this process or mapped read-only from a peer. */
public final class HostBuffer implements DeviceBuffer {

    final ProcessIdentity owner;
    final long seq;
    final long size;
    final ByteBuffer memory;
    final Path file;
    private final boolean peer;

    HostBuffer(ProcessIdentity owner, long seq, long size, ByteBuffer memory, boolean peer, Path file) {
        this.owner = owner;
        this.seq = seq;
        this.size = size;
        this.memory = memory;
        this.peer = peer;
        this.file = file;
    }

    @Override
    public long size() {
        return size;
    }

    @Override
    public boolean isPeerMapping() {
        return peer;
    }

    /**
     * The memory as a little-endian byte buffer, for engines that compute on the host (the examples' Java
     * transformer) and for tests. Absolute get/put only: the buffer is shared with the copy engine.
     */
    public ByteBuffer memory() {
        return memory;
    }

    /**
     * Throws when some process shrank the memory file under this mapping: an access past the new end faults, and
     * the JVM may report that fault only after the copy has returned, so a copy is checked by the file's size.
     * A file already unlinked (freed, or its owner died) keeps its pages while mapped.
     */
    void checkNotTruncated() {
        try {
            long now = Files.size(file);
            if (now < size) {
                throw new DeviceException("memory file " + file.getFileName() + " was truncated to " + now + " of "
                        + size + " bytes by another process");
            }
        } catch (NoSuchFileException gone) {
            // unlinked: the mapping still holds every page
        } catch (IOException e) {
            throw new DeviceException("cannot check memory file " + file.getFileName() + ": " + e.getMessage(), e);
        }
    }

    @Override
    public String toString() {
        return "HostBuffer[" + (peer ? "peer " : "") + owner.pid() + "/" + seq + ", " + size + " bytes]";
    }
}
