package io.kvmarket.device;

/**
 * A span of device memory: allocated by this process, or a mapping of a peer's allocation opened from its IPC
 * handle. Only the {@link Device} that made it may use it.
 */
public interface DeviceBuffer {

    /** Size in bytes. */
    long size();

    /** True when this buffer maps a peer's allocation (read through IPC) rather than memory this process owns. */
    boolean isPeerMapping();
}
