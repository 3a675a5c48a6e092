package io.kvmarket.benchmarks;

import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.NodeId;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.redis.RedisRegistry;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.PublishOutcome;
import io.kvmarket.testkit.ChildJvm;
import io.kvmarket.testkit.RedisServer;
import io.kvmarket.testkit.ScratchDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.TimeUnit;

/**
 * How many longest-prefix lookups one Redis serves: K client processes, each with its own registry (one connection),
 * look up the same 32-chunk prompt in a loop for a few seconds; the lookups of all are summed. The redis-server runs
 * on this machine and shares its cores with the clients, so the figure is a floor for a dedicated Redis host.
 *
 * <p>Usage: {@code RegistryScale [K ...]} (default 1 2 4 8); needs redis-server.
 */
public final class RegistryScale {

    private static final int CHUNKS = 32;
    private static final int SECONDS = 5;
    private static final long WARM_UP_MS = 6_000;

    private RegistryScale() {
    }

    public static void main(String[] args) throws Exception {
        if (args.length > 0 && args[0].equals("client")) {
            client(args[1], Long.parseLong(args[2]), Integer.parseInt(args[3]));
            return;
        }
        List<Integer> ks = new ArrayList<>();
        for (String a : args.length == 0 ? new String[] {"1", "2", "4", "8"} : args) {
            ks.add(Integer.parseInt(a));
        }
        Path dir = Files.createTempDirectory("kvmarket-registry-scale-");
        try (RedisServer server = RedisServer.start(dir)) {
            try (RedisRegistry registry = RedisRegistry.open(server.uri(), "scale")) {
                for (int i = 0; i < CHUNKS; i++) {
                    Offer o = Offer.of(key(i), NodeId.local(), ProcessIdentity.current(),
                            new Endpoint(Endpoint.DEVICE_IPC, new byte[44]), (long) i << 20, 1 << 20, 1, i + 1,
                            registry.clockMillis() + TimeUnit.HOURS.toMillis(1));
                    if (registry.publish(o) != PublishOutcome.PUBLISHED) {
                        throw new IllegalStateException("setup could not publish chunk " + i);
                    }
                }
                // The owner's heartbeat must outlive the run, so this registry stays open while clients look up.
                for (int k : ks) {
                    // All clients measure the same wall-clock window, after every JVM has started and warmed up.
                    long startAt = System.currentTimeMillis() + WARM_UP_MS;
                    List<ChildJvm> clients = new ArrayList<>();
                    for (int c = 0; c < k; c++) {
                        clients.add(ChildJvm.start(RegistryScale.class, List.of("-Xmx128m",
                                "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn"), "client", server.uri(),
                                Long.toString(startAt), Integer.toString(SECONDS)));
                    }
                    long total = 0;
                    for (ChildJvm c : clients) {
                        String line = c.awaitLine("LOOKUPS", Duration.ofSeconds(SECONDS + 60));
                        total += Long.parseLong(line.split(" ")[1]);
                        c.close();
                    }
                    System.out.printf(Locale.ROOT, "registry_scale: clients=%d chunks_per_lookup=%d lookups_per_s=%.0f"
                            + " per_client=%.0f%n", k, CHUNKS, total / (double) SECONDS, total / (double) SECONDS / k);
                }
            }
        } finally {
            ScratchDir.delete(dir);
        }
    }

    private static ChunkKey key(int i) {
        return new ChunkKey(0x5ca1e_0000L + i, 0x9e3779b97f4a7c15L * (i + 1));
    }

    /** One client: warms up until {@code startAt} (epoch ms), then counts lookups for {@code seconds}; prints them. */
    private static void client(String uri, long startAt, int seconds) {
        ChunkKey[] keys = new ChunkKey[CHUNKS];
        for (int i = 0; i < CHUNKS; i++) {
            keys[i] = key(i);
        }
        try (RedisRegistry registry = RedisRegistry.open(uri, "scale")) {
            while (System.currentTimeMillis() < startAt) {
                registry.lookupPrefix(keys, CHUNKS);
            }
            long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
            long n = 0;
            while (System.nanoTime() < end) {
                if (registry.lookupPrefix(keys, CHUNKS).size() != CHUNKS) {
                    throw new IllegalStateException("a lookup missed the published prompt");
                }
                n++;
            }
            System.out.println("LOOKUPS " + n);
        }
    }
}
