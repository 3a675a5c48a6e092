package io.kvmarket.device;

import java.util.Optional;

/**
 * A kind of device a module brings (the CUDA runtime in kvmarket-nvlink), found through {@link java.util.ServiceLoader}.
 * Availability is probed once by the provider and kept with its cause, like Netty's {@code Epoll}.
 */
public interface DeviceProvider {

    /** Short name, e.g. {@code cuda}. */
    String name();

    /** Empty when the device can be opened; otherwise why not (no driver, no GPU, library missing). */
    Optional<Throwable> unavailabilityCause();

    /** Opens the device; only called when {@link #unavailabilityCause()} is empty. */
    Device open();
}
