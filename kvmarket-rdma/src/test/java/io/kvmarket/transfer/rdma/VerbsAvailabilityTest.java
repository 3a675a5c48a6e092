package io.kvmarket.transfer.rdma;

import io.kvmarket.testkit.ChildJvm;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Verbs are probed once per process and the cause kept: no device, no ACTIVE port and turned off each name
 * themselves, and the marketplace then opens TCP alone (the fallback) instead of failing. Each case runs in a JVM
 * of its own, the fake provider told what to pretend through its environment.
 */
@Timeout(120)
class VerbsAvailabilityTest {

    private static final Duration WAIT = Duration.ofSeconds(60);
    private static final String SECRET = "KVMARKET_CLUSTER_SECRET=availability-test-secret";

    @BeforeAll
    static void verbs() {
        FakeVerbs.require();
    }

    private static List<String> probe(List<String> jvmArgs, String... env) {
        List<String> prefix = new ArrayList<>(List.of("env"));
        prefix.addAll(List.of(env)); // options such as -u first: env takes none after an assignment
        prefix.add(SECRET);
        try (ChildJvm c = ChildJvm.start(prefix, VerbsProbe.class, jvmArgs)) {
            String first = c.awaitLine("", WAIT);
            return List.of(first, c.awaitLine("OPENED", WAIT));
        }
    }

    @Test
    void overTheFakeProviderBothNetworkTransportsOpen() {
        assertEquals(List.of("AVAILABLE", "OPENED rdma,tcp,device-ipc"), probe(List.of()));
    }

    @Test
    void noDeviceIsTheCauseAndTcpAloneOpens() {
        List<String> out = probe(List.of(), "KVM_FAKE_VERBS_DEVICES=0");
        assertEquals("CAUSE no RDMA device", out.get(0));
        assertEquals("OPENED tcp,device-ipc", out.get(1));
    }

    @Test
    void aPortNotActiveIsTheCause() {
        List<String> out = probe(List.of(), "KVM_FAKE_VERBS_PORT_STATE=down");
        assertTrue(out.get(0).startsWith("CAUSE ") && out.get(0).contains("no ACTIVE port"), out.get(0));
        assertEquals("OPENED tcp,device-ipc", out.get(1));
    }

    @Test
    void turnedOffByItsPropertyEvenWhereVerbsWork() {
        List<String> out = probe(List.of("-D" + Verbs.ENABLED + "=false"));
        assertEquals("CAUSE turned off by -Dkvmarket.rdma=false", out.get(0));
        assertEquals("OPENED tcp,device-ipc", out.get(1));
    }

    /** The system's own libibverbs: on a machine without an RDMA NIC (CI), no device. */
    @Test
    void theSystemLibraryWithoutAnRdmaDeviceSaysSo() {
        List<String> out = probe(List.of(), "-u", "LD_LIBRARY_PATH");
        if (Files.isDirectory(Path.of("/sys/class/infiniband"))) {
            System.out.println("this machine has RDMA devices; the system library says: " + out);
            return;
        }
        assertEquals("CAUSE no RDMA device", out.get(0));
        assertEquals("OPENED tcp,device-ipc", out.get(1));
    }
}
