package io.kvmarket.testkit;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

/**
 * Nodes of a cluster on one machine: one network namespace per node on a bridge, addresses only inside them
 * ({@code 10.213.S.2}, {@code .3}, ...; the root namespace is {@code .1}), each process started in a node with a
 * private {@code /dev/shm} ({@code unshare -m}), so no shared-memory path can cheat. Faults for real: a node's link
 * taken down and up, or slowed. Needs root and iproute2; where either is missing, {@link #unavailabilityCause()} says so and
 * the tests skip. Everything it made is removed by {@link #close()}.
 */
public final class NetnsCluster implements AutoCloseable {

    /** Clusters of this JVM so far: part of every name, so clusters side by side never share one. */
    private static final java.util.concurrent.atomic.AtomicInteger CREATED = new java.util.concurrent.atomic.AtomicInteger();

    private final String id;
    private int subnet;
    private final int nodes;
    private final List<ChildJvm> children = new ArrayList<>();
    /** Undoes, newest first, what {@link #create} made: a failed create removes only its own. */
    private final List<List<String>> undo = new ArrayList<>();

    private NetnsCluster(String id, int nodes) {
        this.id = id;
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
            run(List.of("tc", "-V"));
            return Optional.empty();
        } catch (RuntimeException e) {
            return Optional.of("network namespaces are unavailable here: " + e.getMessage());
        }
    }

    /**
     * Creates {@code nodes} namespaces on a new bridge, with names of their own and a subnet no other bridge on the
     * machine uses, so clusters of this or other JVMs may run side by side.
     */
    public static NetnsCluster create(int nodes) {
        long pid = ProcessHandle.current().pid();
        String id = "k" + (pid % 100_000) + "c" + (CREATED.incrementAndGet() % 100);
        NetnsCluster c = new NetnsCluster(id, nodes);
        try {
            c.made(List.of("ip", "link", "add", c.bridge(), "type", "bridge"), List.of("ip", "link", "del", c.bridge()));
            c.subnet = claimSubnet(c.bridge());
            run(List.of("ip", "link", "set", c.bridge(), "up"));
            for (int n = 0; n < nodes; n++) {
                String ns = c.namespace(n);
                c.made(List.of("ip", "netns", "add", ns), List.of("ip", "netns", "del", ns));
                c.made(List.of("ip", "link", "add", c.hostEnd(n), "type", "veth", "peer", "name", c.nodeEnd(n)),
                        List.of("ip", "link", "del", c.hostEnd(n)));
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

    /** The namespaces' names, to check after {@link #close()} that none is left. */
    public List<String> namespaceNames() {
        List<String> out = new ArrayList<>();
        for (int n = 0; n < nodes; n++) {
            out.add(namespace(n));
        }
        return out;
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

    /**
     * Starts {@code main} in node {@code n}, its node directory in the node's own {@code /dev/shm} unless
     * {@code jvmArgs} name another (never the test run's, which every node would share); {@link #close()} kills it.
     */
    public ChildJvm startJvm(int n, Class<?> main, List<String> jvmArgs, String... args) {
        List<String> jvm = new ArrayList<>();
        jvm.add("-Dkvmarket.dir=/dev/shm/kvmarket-node");
        jvm.addAll(jvmArgs);
        ChildJvm child = ChildJvm.start(inNode(n), main, jvm, args);
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

    /** Slows what node {@code n} receives to {@code mbit} Mbit/s (a token bucket, {@code tc tbf}), as a thin link. */
    public void shapeLink(int n, int mbit) {
        run(List.of("tc", "qdisc", "replace", "dev", hostEnd(n), "root", "tbf", "rate", mbit + "mbit", "burst", "64kb",
                "latency", "400ms"));
    }

    /** Gives node {@code n} its full link back. */
    public void unshapeLink(int n) {
        run(List.of("tc", "qdisc", "del", "dev", hostEnd(n), "root"));
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
        for (int i = undo.size() - 1; i >= 0; i--) {
            quietly(undo.get(i));
        }
        undo.clear();
    }

    /** Runs {@code command}, and remembers {@code inverse} for {@link #close()}. */
    private void made(List<String> command, List<String> inverse) {
        run(command);
        undo.add(inverse);
    }

    /**
     * Gives the bridge the first free {@code 10.213.S.1/24}: an address already on the machine is refused by the
     * kernel only on the same interface, so the free ones are found from the machine's addresses, under a lock
     * file shared by every JVM.
     */
    private static int claimSubnet(String bridge) {
        java.nio.file.Path lock = java.nio.file.Path.of(System.getProperty("java.io.tmpdir"), "kvmarket-netns.lock");
        try (java.nio.channels.FileChannel ch = java.nio.channels.FileChannel.open(lock,
                java.nio.file.StandardOpenOption.CREATE, java.nio.file.StandardOpenOption.WRITE);
             java.nio.channels.FileLock ignored = ch.lock()) {
            String used = Commands.output(List.of("ip", "-o", "-4", "addr", "show"));
            for (int s = 20; s < 250; s++) {
                if (!used.contains(" 10.213." + s + ".")) {
                    run(List.of("ip", "addr", "add", "10.213." + s + ".1/24", "dev", bridge));
                    return s;
                }
            }
            throw new IllegalStateException("no free 10.213.S.0/24 subnet for a test cluster");
        } catch (IOException e) {
            throw new UncheckedIOException("cannot lock " + lock, e);
        }
    }

    /** The bridge's name, to check after {@link #close()} that it is gone. */
    public String bridge() {
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
        Commands.output(command);
    }
}
