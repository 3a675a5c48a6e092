package io.kvmarket.transfer;

import io.kvmarket.device.Device;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.ServiceLoader;

/**
 * Opens the default transports: one of every available {@link TransportProvider} on the class path, with one log
 * line saying why each unavailable one was passed over.
 */
public final class Transports {

    private static final Logger LOG = LoggerFactory.getLogger(Transports.class);

    private Transports() {
    }

    public static List<TransportProvider> providers() {
        List<TransportProvider> out = new ArrayList<>();
        ServiceLoader.load(TransportProvider.class, Transports.class.getClassLoader()).forEach(out::add);
        return out;
    }

    /** One transport of every available provider, in class path order. */
    public static List<Transport> openAvailable(Device device, long nodeId, long idleMillis) {
        List<Transport> out = new ArrayList<>();
        for (TransportProvider p : providers()) {
            Optional<Throwable> cause = p.unavailabilityCause();
            if (cause.isEmpty()) {
                out.add(p.open(device, nodeId, idleMillis));
            } else {
                LOG.info("transport {} unavailable: {}", p.name(), cause.get().getMessage());
            }
        }
        return out;
    }
}
