package io.kvmarket.transfer.rdma;

import io.kvmarket.device.host.HostDevice;
import io.kvmarket.transfer.Transport;
import io.kvmarket.transfer.Transports;

import java.nio.file.Files;
import java.util.List;
import java.util.stream.Collectors;

/**
 * Prints what this process's environment makes of verbs: {@code CAUSE <why>} or {@code AVAILABLE}, then
 * {@code OPENED <transport names>} as a marketplace with the cluster secret in its environment would open them.
 */
public final class VerbsProbe {

    public static void main(String[] args) throws Exception {
        Throwable cause = Verbs.unavailabilityCause();
        System.out.println(cause == null ? "AVAILABLE" : "CAUSE " + cause.getMessage());
        try (HostDevice device = new HostDevice(Files.createTempDirectory("verbs-probe"))) {
            List<Transport> opened = Transports.openAvailable(device, 1, 60_000);
            System.out.println("OPENED " + opened.stream().map(Transport::name).collect(Collectors.joining(",")));
            opened.forEach(Transport::close);
        }
        System.out.flush();
    }
}
