package io.kvmarket.redis;

import io.kvmarket.node.NodeDirectory;
import io.kvmarket.testkit.ChildJvm;
import io.kvmarket.testkit.NetnsCluster;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.UUID;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/** The testkit's NetnsCluster: clusters side by side, a private /dev/shm per node, nothing left behind. */
@Timeout(120)
class NetnsClusterTest {

    /** The prefix of every name this JVM's clusters use. */
    private static final String ID = "k" + (ProcessHandle.current().pid() % 100_000);

    private static String sh(String... command) throws Exception {
        Process p = new ProcessBuilder(command).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        p.waitFor(30, TimeUnit.SECONDS);
        return p.exitValue() + ":" + out;
    }

    private static void assumeNetns() {
        Optional<String> cause = NetnsCluster.unavailabilityCause();
        assumeTrue(cause.isEmpty(), () -> cause.orElse(""));
    }

    @AfterEach
    void removeLeftovers() throws Exception {
        String ns = sh("ip", "netns", "list");
        for (String line : ns.split("\n")) {
            String name = line.split(" ")[0].trim();
            if (name.startsWith(ID + "c")) {
                sh("ip", "netns", "del", name);
            }
        }
        for (String line : sh("ip", "-o", "link", "show").split("\n")) {
            String[] parts = line.split(": ");
            if (parts.length > 1 && parts[1].startsWith(ID + "c")) {
                sh("ip", "link", "del", parts[1].split("@")[0]);
            }
        }
    }

    /**
     * Two clusters of one JVM (JUnit's parallel execution, or a test that needs two) get names and subnets of their
     * own, and neither touches the other (the second once failed, and its cleanup deleted the first's bridge and
     * namespaces).
     */
    @Test
    void twoClustersSideBySideInOneJvmLeaveEachOtherIntact() throws Exception {
        assumeNetns();
        try (NetnsCluster first = NetnsCluster.create(1)) {
            String ns = first.namespaceNames().get(0);
            assertTrue(sh("ip", "netns", "list").contains(ns));
            RuntimeException second = null;
            try (NetnsCluster other = NetnsCluster.create(1)) {
                assertTrue(!other.address(0).equals(first.address(0)),
                        "two clusters side by side share the address " + first.address(0));
            } catch (RuntimeException e) {
                second = e;
            }
            String left = sh("ip", "netns", "list");
            String bridge = sh("ip", "link", "show", first.bridge());
            assertTrue(left.contains(ns) && bridge.startsWith("0:"),
                    "after a second cluster was made beside it (" + (second == null ? "ok" : second.getMessage())
                            + "), the first cluster's namespace/bridge is gone: netns=[" + left.strip() + "] bridge=["
                            + bridge.strip() + "]");
        }
    }

    /** inNode: a file one node writes to /dev/shm is seen neither by another node nor by the host, and back. */
    @Test
    void eachNodeHasAPrivateDevShm() throws Exception {
        assumeNetns();
        String name = "kvprobe-" + UUID.randomUUID();
        String hostName = "kvprobe-host-" + UUID.randomUUID();
        java.nio.file.Path hostFile = java.nio.file.Path.of("/dev/shm", hostName);
        java.nio.file.Files.writeString(hostFile, "host");
        try (NetnsCluster c = NetnsCluster.create(2)) {
            List<String> write = new ArrayList<>(c.inNode(0));
            write.addAll(List.of("sh", "-c", "echo x > /dev/shm/" + name + " && ls /dev/shm"));
            String w = sh(write.toArray(new String[0]));
            assertTrue(w.startsWith("0:"), w);
            assertFalse(w.contains(hostName), "node 0 sees the host's /dev/shm: " + w);
            assertFalse(java.nio.file.Files.exists(java.nio.file.Path.of("/dev/shm", name)),
                    "node 0's /dev/shm file is visible on the host");
            List<String> read = new ArrayList<>(c.inNode(1));
            read.addAll(List.of("sh", "-c", "ls /dev/shm"));
            String r = sh(read.toArray(new String[0]));
            assertFalse(r.contains(name), "node 1 sees node 0's /dev/shm: " + r);
            // a node reaches the others only on the bridge's subnet; nothing routes beyond it
            List<String> route = new ArrayList<>(c.inNode(1));
            route.addAll(List.of("ip", "route"));
            String routes = sh(route.toArray(new String[0]));
            assertFalse(routes.contains("default"), routes);
        } finally {
            java.nio.file.Files.deleteIfExists(hostFile);
        }
    }

    /**
     * A node's JVM keeps its node directory in the node's own /dev/shm, even when the test run sets kvmarket.dir
     * for itself (and so for its ChildJvm children): shared, it would let one node read another's memory files.
     */
    @Test
    void aNodesJvmKeepsItsNodeDirectoryInItsOwnDevShm() throws Exception {
        assumeNetns();
        try (NetnsCluster c = NetnsCluster.create(1);
             ChildJvm child = c.startJvm(0, PrintNodeDirectory.class, List.of())) {
            assertEquals("DIR /dev/shm/kvmarket-node", child.awaitLine("DIR", Duration.ofSeconds(60)));
        }
    }

    /** Prints the node directory this JVM would use. */
    public static final class PrintNodeDirectory {
        public static void main(String[] args) {
            System.out.println("DIR " + NodeDirectory.defaultPath());
        }
    }

    /** A node whose process exits early: close() still leaves nothing behind. */
    @Test
    void closeLeavesNothingBehindAfterAChildExitedEarly() throws Exception {
        assumeNetns();
        try (NetnsCluster c = NetnsCluster.create(2)) {
            List<String> cmd = new ArrayList<>(c.inNode(1));
            cmd.addAll(List.of("sh", "-c", "exit 3"));
            assertEquals("3:", sh(cmd.toArray(new String[0])));
        }
        String left = sh("ip", "netns", "list") + sh("ip", "link", "show");
        assertFalse(left.contains(ID + "c"), left);
    }
}
