package io.kvmarket.testkit;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.TimeUnit;

/**
 * Nodes of a cluster on one machine: one network namespace per node on a bridge, addresses only inside them
 * ({@code 10.213.S.2}, {@code .3}, ...; the root namespace is {@code .1}), each process started in a node with a
 * private {@code /dev/shm} ({@code unshare -m}), so no shared-memory path can cheat. Faults for real: a node's link
 * taken down and up. Needs root and iproute2; where either is missing, {@link #unavailabilityCause()} says so and
 * the tests skip. Everything it made is removed by {@link #close()}.
 */
public final class NetnsCluster implements AutoCloseable {

    private final String id;
    private final int subnet;
    private final int nodes;
    private final List<ChildJvm> children = new ArrayList<>();

    private NetnsCluster(String id, int subnet, int nodes) {
        this.id = id;
        this.subnet = subnet;
        this.nodes = nodes;
    }

    /** Empty where namespaces can be made here; otherwise why not, for a one-line skip. */
    public static Optional<String> unavailabilityCause() {
        if (!"root".equals(System.getProperty("user.name"))) {
            return Optional.of("network-namespace tests need root (they run in CI, which is root)");
        }
        try {
            run(List.of("ip", "netns", "list"));
            run(List.of("unshare", "--version"));
            return Optional.empty();
        } catch (RuntimeException e) {
            return Optional.of("network namespaces are unavailable here: " + e.getMessage());
        }
    }

    /** Creates {@code nodes} namespaces on a new bridge; a distinct subnet per cluster, so tests may run side by side. */
    public static NetnsCluster create(int nodes) {
        long pid = ProcessHandle.current().pid();
        int subnet = (int) (pid % 200) + 20;
        String id = "k" + (pid % 100_000);
        NetnsCluster c = new NetnsCluster(id, subnet, nodes);
        try {
            run(List.of("ip", "link", "add", c.bridge(), "type", "bridge"));
            run(List.of("ip", "addr", "add", "10.213." + subnet + ".1/24", "dev", c.bridge()));
            run(List.of("ip", "link", "set", c.bridge(), "up"));
            for (int n = 0; n < nodes; n++) {
                String ns = c.namespace(n);
                run(List.of("ip", "netns", "add", ns));
                run(List.of("ip", "link", "add", c.hostEnd(n), "type", "veth", "peer", "name", c.nodeEnd(n)));
                run(List.of("ip", "link", "set", c.nodeEnd(n), "netns", ns));
                run(List.of("ip", "link", "set", c.hostEnd(n), "master", c.bridge()));
                run(List.of("ip", "link", "set", c.hostEnd(n), "up"));
                run(List.of("ip", "-n", ns, "addr", "add", c.address(n) + "/24", "dev", c.nodeEnd(n)));
                run(List.of("ip", "-n", ns, "link", "set", c.nodeEnd(n), "up"));
                run(List.of("ip", "-n", ns, "link", "set", "lo", "up"));
            }
            return c;
        } catch (RuntimeException e) {
            c.close();
            throw e;
        }
    }

    public int nodes() {
        return nodes;
    }

    /** Node {@code n}'s address on the bridge. */
    public String address(int n) {
        return "10.213." + subnet + "." + (n + 2);
    }

    /** The prefix that runs a command in node {@code n}, with a private, empty /dev/shm. */
    public List<String> inNode(int n) {
        return List.of("ip", "netns", "exec", namespace(n), "unshare", "-m", "--propagation", "private", "sh", "-c",
                "mount -t tmpfs -o mode=1777 tmpfs /dev/shm && exec \"$@\"", "node-" + n);
    }

    /** Starts {@code main} in node {@code n}; {@link #close()} kills it. */
    public ChildJvm startJvm(int n, Class<?> main, List<String> jvmArgs, String... args) {
        ChildJvm child = ChildJvm.start(inNode(n), main, jvmArgs, args);
        children.add(child);
        return child;
    }

    /** Takes node {@code n}'s link down: its packets go nowhere, its connections stall. */
    public void linkDown(int n) {
        run(List.of("ip", "link", "set", hostEnd(n), "down"));
    }

    public void linkUp(int n) {
        run(List.of("ip", "link", "set", hostEnd(n), "up"));
    }

    /** Kills every process it started and removes the namespaces, links and bridge. */
    @Override
    public void close() {
        for (ChildJvm c : children) {
            try {
                c.kill();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        for (int n = 0; n < nodes; n++) {
            quietly(List.of("ip", "netns", "del", namespace(n)));
            quietly(List.of("ip", "link", "del", hostEnd(n)));
        }
        quietly(List.of("ip", "link", "del", bridge()));
    }

    private String bridge() {
        return id + "br";
    }

    private String namespace(int n) {
        return id + "n" + n;
    }

    private String hostEnd(int n) {
        return id + "h" + n;
    }

    private String nodeEnd(int n) {
        return id + "v" + n;
    }

    private static void quietly(List<String> command) {
        try {
            run(command);
        } catch (RuntimeException ignored) {
            // already gone
        }
    }

    private static void run(List<String> command) {
        try {
            Process p = new ProcessBuilder(command).redirectErrorStream(true).start();
            String out = new String(p.getInputStream().readAllBytes());
            if (!p.waitFor(30, TimeUnit.SECONDS) || p.exitValue() != 0) {
                throw new IllegalStateException(String.join(" ", command) + " failed: " + out.strip());
            }
        } catch (IOException e) {
            throw new UncheckedIOException(String.join(" ", command) + " could not run", e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted running " + command, e);
        }
    }
}
