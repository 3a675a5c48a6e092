package io.kvmarket.testkit;

import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.device.host.HostBuffer;

/**
 * How a test reads and writes device memory from the host, to fill a KV cache and check what an import delivered.
 * The host device's memory is a mapped buffer; a GPU's goes through the driver (the CUDA tests supply theirs).
 */
public interface DeviceBytes {

    void write(DeviceBuffer buffer, long offset, byte[] bytes);

    byte[] read(DeviceBuffer buffer, long offset, int length);

    /** Writes become visible to the device's own copies; a no-op where they already are. */
    default void flush() {
    }

    /** The host device's memory, accessed directly. */
    DeviceBytes HOST = new DeviceBytes() {
        @Override
        public void write(DeviceBuffer buffer, long offset, byte[] bytes) {
            ((HostBuffer) buffer).memory().put(Math.toIntExact(offset), bytes);
        }

        @Override
        public byte[] read(DeviceBuffer buffer, long offset, int length) {
            byte[] out = new byte[length];
            ((HostBuffer) buffer).memory().get(Math.toIntExact(offset), out);
            return out;
        }
    };
}
