package io.kvmarket.testkit;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * A real Redis Cluster for tests: {@code masters} {@code redis-server} nodes on loopback, joined with
 * {@code redis-cli --cluster create} (no replicas), slots spread over all of them. Closing it stops every node.
 */
public final class RedisCluster implements AutoCloseable {

    private final List<RedisServer> nodes = new ArrayList<>();

    private RedisCluster() {
    }

    /** True when {@code redis-server} and {@code redis-cli} run here. */
    public static boolean installed() {
        return RedisServer.installed() && Commands.succeeds("redis-cli", "--version");
    }

    /** Starts {@code masters} nodes (at least 3, as Redis requires), joins them, and waits until the cluster is ok. */
    public static RedisCluster start(Path dir, int masters) {
        RedisCluster c = new RedisCluster();
        try {
            List<String> create = new ArrayList<>(List.of("redis-cli", "--cluster", "create"));
            for (int i = 0; i < masters; i++) {
                RedisServer node = RedisServer.startClusterNode(dir);
                c.nodes.add(node);
                create.add("127.0.0.1:" + node.port());
            }
            create.addAll(List.of("--cluster-replicas", "0", "--cluster-yes"));
            Commands.output(create);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (!c.ready()) {
                if (System.nanoTime() > deadline) {
                    throw new IllegalStateException("the Redis Cluster did not come up within 30 s");
                }
                Thread.sleep(100);
            }
            return c;
        } catch (RuntimeException e) {
            c.close();
            throw e;
        } catch (InterruptedException e) {
            c.close();
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted starting a Redis Cluster", e);
        }
    }

    /** Every node says the cluster is ok. */
    private boolean ready() {
        for (RedisServer n : nodes) {
            if (!Commands.output(List.of("redis-cli", "-p", Integer.toString(n.port()), "cluster", "info"))
                    .contains("cluster_state:ok")) {
                return false;
            }
        }
        return true;
    }

    /** A URI of the first node in the cluster scheme, from which clients learn the others. */
    public String uri() {
        return "redis-cluster://127.0.0.1:" + nodes.get(0).port();
    }

    public List<RedisServer> nodes() {
        return List.copyOf(nodes);
    }

    @Override
    public void close() {
        for (RedisServer n : nodes) {
            n.close();
        }
        nodes.clear();
    }
}
