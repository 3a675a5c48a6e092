package io.kvmarket.transfer.tcp;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.device.Device;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.device.host.HostDevice;

import java.nio.ByteBuffer;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;

/**
 * The host device as a GPU looks to a transport: its memory is out of the JVM's reach (no host view), and only
 * staging memory is seen, so the TCP transport's staging path runs for real on a machine without a GPU. Counts
 * the staging memory it hands out, to check the ring stays bounded and is freed.
 */
final class OpaqueDevice implements Device {

    private final HostDevice host;
    private final Set<DeviceBuffer> staging = ConcurrentHashMap.newKeySet();

    OpaqueDevice(HostDevice host) {
        this.host = host;
    }

    int stagingBuffers() {
        return staging.size();
    }

    @Override
    public String name() {
        return "opaque " + host.name();
    }

    @Override
    public DeviceBuffer allocate(long bytes) {
        return host.allocate(bytes);
    }

    @Override
    public DeviceBuffer allocateStaging(long bytes) {
        DeviceBuffer b = host.allocate(bytes);
        staging.add(b);
        return b;
    }

    @Override
    public Optional<ByteBuffer> hostView(DeviceBuffer buffer) {
        return staging.contains(buffer) ? host.hostView(buffer) : Optional.empty();
    }

    @Override
    public void free(DeviceBuffer buffer) {
        staging.remove(buffer);
        host.free(buffer);
    }

    @Override
    public byte[] exportHandle(DeviceBuffer buffer) {
        return host.exportHandle(buffer);
    }

    @Override
    public DeviceBuffer openHandle(byte[] handle) {
        return host.openHandle(handle);
    }

    @Override
    public void closeHandle(DeviceBuffer mapped) {
        host.closeHandle(mapped);
    }

    @Override
    public CompletableFuture<Void> copy(DeviceBuffer src, DeviceBuffer dst, CopyBatch batch) {
        return host.copy(src, dst, batch);
    }

    @Override
    public void close() {
        host.close();
    }
}
