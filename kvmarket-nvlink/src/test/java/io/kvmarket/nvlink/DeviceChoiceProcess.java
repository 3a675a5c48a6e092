package io.kvmarket.nvlink;

import io.kvmarket.device.Device;
import io.kvmarket.device.Devices;

/** Prints the device {@link Devices#open()} picks in this JVM and why CUDA was passed over, if it was. */
public final class DeviceChoiceProcess {

    public static void main(String[] args) {
        try (Device d = Devices.open()) {
            System.out.println("DEVICE " + d.name().split(":")[0] + " CAUSE " + CudaRuntime.unavailabilityCause());
        }
    }
}
