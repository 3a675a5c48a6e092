package io.kvmarket.device;

import io.kvmarket.device.host.HostDevice;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.ArrayList;
import java.util.List;
import java.util.ServiceLoader;

/**
 * Picks the device: the first available {@link DeviceProvider} on the class path, else the {@link HostDevice},
 * with one log line saying why each real device was passed over. Never fails for a missing GPU.
 */
public final class Devices {

    private static final Logger LOG = LoggerFactory.getLogger(Devices.class);

    private Devices() {
    }

    public static Device open() {
        List<String> passedOver = new ArrayList<>();
        for (DeviceProvider p : ServiceLoader.load(DeviceProvider.class)) {
            var cause = p.unavailabilityCause();
            if (cause.isEmpty()) {
                Device d = p.open();
                LOG.info("using device {}", d.name());
                return d;
            }
            passedOver.add(p.name() + ": " + cause.get());
        }
        HostDevice host = new HostDevice();
        LOG.info("using host device {} ({})", host.name(), passedOver.isEmpty()
                ? "no GPU device module on the class path" : String.join("; ", passedOver));
        return host;
    }
}
