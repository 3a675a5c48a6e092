package io.kvmarket.nvlink;

import io.kvmarket.device.Device;
import io.kvmarket.device.DeviceProvider;

import java.util.Optional;

/** Offers {@link CudaDevice} (device 0) to {@link io.kvmarket.device.Devices#open()} when CUDA is usable. */
public final class CudaDeviceProvider implements DeviceProvider {

    @Override
    public String name() {
        return "cuda";
    }

    @Override
    public Optional<Throwable> unavailabilityCause() {
        return Optional.ofNullable(CudaRuntime.unavailabilityCause());
    }

    @Override
    public Device open() {
        return new CudaDevice(0);
    }
}
