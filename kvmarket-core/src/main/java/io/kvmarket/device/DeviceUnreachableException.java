package io.kvmarket.device;

/**
 * The memory lives on a device this one cannot read directly: another GPU of the node without a peer path (no
 * NVLink or PCIe peer-to-peer between the two), or one hidden from this process. On the import path it becomes a
 * {@code NO_TRANSPORT} miss rather than {@code PEER_GONE}: the exporter is fine, only this route is missing.
 */
public class DeviceUnreachableException extends DeviceException {

    public DeviceUnreachableException(String message) {
        super(message);
    }
}
