package io.kvmarket.device;

/**
 * A runtime failure of the device that is not the caller's fault: a peer allocation that is gone, an
 * allocation the device cannot satisfy, a copy that failed. On the import path it becomes a miss.
 */
public class DeviceException extends RuntimeException {

    public DeviceException(String message) {
        super(message);
    }

    public DeviceException(String message, Throwable cause) {
        super(message, cause);
    }
}
