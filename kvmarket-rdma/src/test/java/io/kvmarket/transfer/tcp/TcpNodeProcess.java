package io.kvmarket.transfer.tcp;

import io.kvmarket.LoadResult;
import io.kvmarket.Match;
import io.kvmarket.PrefillCost;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.key.Namespace;
import io.kvmarket.kv.DType;
import io.kvmarket.kv.KvLayout;
import io.kvmarket.kv.LayoutOrder;
import io.kvmarket.node.NodeId;
import io.kvmarket.redis.RedisRegistry;
import io.kvmarket.testkit.ChildJvm;
import io.kvmarket.testkit.DeviceBytes;
import io.kvmarket.testkit.KvFixture;
import io.kvmarket.testkit.NetnsCluster;
import io.kvmarket.transfer.Transport;
import io.kvmarket.transfer.Transports;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * One engine of a node for the cross-node TCP tests: the Redis registry at {@code URI}, the transports the
 * process's configuration makes available (device IPC, and TCP with the cluster secret), a 32 MiB KV cache of
 * {@value #TOKENS} tokens, offers leased for 3 s (renewed, or offered again after a Redis restart, every second). {@code export URI SALT}: exports a prompt, prints {@code READY <chunks>}, waits.
 * {@code import URI}: for each stdin line {@code load SALT} or {@code costly-load SALT} (planned against a prefill
 * of 1 ms per token), imports into shuffled blocks and prints {@code VIA <transports that delivered>}, then
 * {@code LOADED <tokens> <reason> <first wrong block>}. Its static methods are the tests' side of that protocol.
 */
public final class TcpNodeProcess {

    /** What an import of the whole prompt, byte for byte, answers. */
    public static final String FULL = "LOADED " + KvFixture.BLOCKS * 16 + " NONE -1";
    private static final Duration ANSWER = Duration.ofSeconds(60);

    static final KvLayout LAYOUT = KvLayout.of(8, 8, 128, DType.FLOAT16, 16, LayoutOrder.LAYER_MAJOR);
    static final Namespace NS = Namespace.of("tcp-node-model", "rev1", "ids", LAYOUT);
    public static final int TOKENS = KvFixture.BLOCKS * 16;
    static final int BLOCKS = KvFixture.BLOCKS;

    private static volatile boolean costly;

    public static void main(String[] args) throws Exception {
        HostDevice device = new HostDevice();
        List<Transport> transports = Transports.openAvailable(device, NodeId.local(), 60_000);
        PrefillCost cost = tokens -> costly ? tokens * 1_000_000L : Long.MAX_VALUE;
        long pool = (long) TOKENS / KvFixture.CHUNK * KvFixture.chunkBytes(LAYOUT, KvFixture.CHUNK);
        try (RedisRegistry registry = RedisRegistry.open(args[1]);
             KvFixture engine = new KvFixture(device, DeviceBytes.HOST, true, registry, NS, t -> t,
                     b -> b.poolBytes(pool).transports(transports).prefillCost(cost).offerLeaseMillis(3000))) {
            BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
            if (args[0].equals("export")) {
                int salt = Integer.parseInt(args[2]);
                int[] blocks = KvFixture.scattered(BLOCKS, salt);
                engine.fill(blocks, BLOCKS, salt);
                System.out.println("READY " + engine.market.export(KvFixture.tokens(TOKENS, salt), TOKENS, blocks)
                        .chunksPublished());
                System.out.flush();
                while (in.readLine() != null) {
                    // until stdin closes or the process is killed
                }
                return;
            }
            System.out.println("READY");
            System.out.flush();
            for (String line = in.readLine(); line != null; line = in.readLine()) {
                String[] words = line.trim().split(" ");
                costly = words[0].equals("costly-load");
                int salt = Integer.parseInt(words[1]);
                int[] into = KvFixture.scattered(BLOCKS, salt + 1000);
                // Zeroed first: bytes a previous load left in these blocks must not pass for this one's.
                device.hostView(engine.cache.buffer()).orElseThrow().put(0, new byte[(int) engine.cache.buffer().size()]);
                Match m = engine.market.match(KvFixture.tokens(TOKENS, salt), TOKENS);
                LoadResult r = engine.market.load(m, into).join();
                int wrong = engine.firstWrongBlock(into, r.tokensImported() / 16, salt);
                System.out.println("VIA " + r.transports());
                System.out.println("LOADED " + r.tokensImported() + " " + r.reason() + " " + wrong);
                System.out.flush();
            }
        } finally {
            transports.forEach(Transport::close);
        }
    }

    /** A cluster secret file, as a user keeps one: readable by its owner only. */
    public static Path secretFile(Path dir, String secret) throws IOException {
        Path file = dir.resolve("cluster.secret");
        Files.writeString(file, secret + "\n", StandardCharsets.UTF_8);
        Files.setPosixFilePermissions(file, PosixFilePermissions.fromString("rw-------"));
        return file;
    }

    /** Starts this process on node {@code n} of {@code cluster}, named after it, with the cluster secret. */
    public static ChildJvm start(NetnsCluster cluster, int n, Path secret, List<String> jvmOptions, String... args) {
        List<String> options = new ArrayList<>(List.of("-D" + NodeId.PROPERTY + "=node-" + n,
                "-D" + TcpTransportProvider.SECRET_FILE + "=" + secret));
        options.addAll(jvmOptions);
        return cluster.startJvm(n, TcpNodeProcess.class, options, args);
    }

    /** Sends {@code command} to an importing node; its {@code LOADED} answer. */
    public static String load(ChildJvm importer, String command) {
        importer.send(command);
        return importer.awaitLine("LOADED", ANSWER);
    }

    /** Repeats {@code command} until it answers {@code wanted}, for up to 30 s; the last answer. */
    public static String loadUntil(ChildJvm importer, String command, String wanted) throws InterruptedException {
        String last = "";
        long deadline = System.nanoTime() + Duration.ofSeconds(30).toNanos();
        while (!last.equals(wanted) && System.nanoTime() < deadline) {
            Thread.sleep(200);
            last = load(importer, command);
        }
        return last;
    }

    /** A miss with a reason, fewer tokens than asked, and the tokens it did import exact. */
    public static void assertCutWithExactPrefix(String line) {
        String[] w = line.split(" ");
        assertTrue(Integer.parseInt(w[1]) < TOKENS, "the cut transfer still reported everything: " + line);
        assertNotEquals("NONE", w[2], "a cut transfer without a reason: " + line);
        assertEquals("-1", w[3], "wrong bytes within the imported prefix: " + line);
    }
}
