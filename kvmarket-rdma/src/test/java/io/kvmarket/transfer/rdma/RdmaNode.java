package io.kvmarket.transfer.rdma;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;
import io.kvmarket.testkit.DeviceBytes;
import io.kvmarket.testkit.PublishedChunks;
import io.kvmarket.transfer.TransferException;
import io.kvmarket.transfer.tcp.ClusterSecret;
import io.kvmarket.transfer.tcp.TcpConfig;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletionException;

/**
 * One side of an RDMA transfer in a process of its own, for tests that kill processes and run the fake provider
 * with faults set in its environment. The pool holds {@code CHUNKS} chunks of {@value #CHUNK} bytes of
 * {@code Random(SEED)}; an import reads every chunk in 16 segments into the same place.
 * <ul>
 *   <li>{@code serve SEED CHUNKS}: serves the pool, prints {@code ENDPOINT <hex>}; stdin {@code live} prints
 *       {@code LIVE <contexts> <registrations> <channels> <queue pairs>}; exits when stdin closes.</li>
 *   <li>{@code fetch SEED CHUNKS HEX DEADLINE_MS}: stdin {@code fetch} imports the pool the endpoint names and prints
 *       {@code FETCHED <chunks delivered> <failure or NONE> <first wrong chunk among them or -1>}; {@code live}.</li>
 *   <li>{@code receive SEED CHUNKS TIMEOUT_MS}: opens its memory to one push, span {@code i} (a chunk) at a shuffled
 *       place, prints {@code TICKET <hex>}, then {@code LANDED <ok or failed>} and {@code RECEIVED <first span not
 *       holding the sender's bytes, -1 when all do>}; {@code live}.</li>
 *   <li>{@code push SEED CHUNKS HEX}: pushes chunk {@code i} of its memory into span {@code i} of the ticket, prints
 *       {@code PUSHED <NONE or failure>}; {@code live}.</li>
 * </ul>
 */
public final class RdmaNode {

    static final int CHUNK = 64 * 1024;
    static final ClusterSecret SECRET = ClusterSecret.of("rdma-node-cluster-secret".getBytes(StandardCharsets.UTF_8));

    public static void main(String[] args) throws Exception {
        long seed = Long.parseLong(args[1]);
        int chunks = Integer.parseInt(args[2]);
        byte[] bytes = new byte[chunks * CHUNK];
        new Random(seed).nextBytes(bytes);
        Path dir = Files.createTempDirectory("rdma-node");
        HostDevice device = new HostDevice(dir);
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        boolean serves = args[0].equals("serve") || args[0].equals("receive");
        TcpConfig control = TcpConfig.of(SECRET).withBind(serves ? new InetSocketAddress(0) : null);
        RdmaConfig config = RdmaConfig.of(control);
        if (args[0].equals("fetch")) {
            config = config.withTimeouts(Long.parseLong(args[4]), config.ackTimeout(), config.retryCount());
        }
        try (RdmaTransport t = RdmaTransport.open(device, serves ? 1 : 2, config)) {
            DeviceBuffer memory = device.allocate(bytes.length);
            if (args[0].equals("receive")) {
                receive(t, memory, bytes, chunks, Long.parseLong(args[3]), in);
                return;
            }
            if (args[0].equals("push")) {
                DeviceBytes.HOST.write(memory, 0, bytes);
                long[] from = new long[chunks];
                for (int c = 0; c < chunks; c++) {
                    from[c] = (long) c * CHUNK;
                }
                String outcome = "NONE";
                try {
                    t.push(HexFormat.of().parseHex(args[3]), memory, from).join();
                } catch (CompletionException e) {
                    outcome = ((TransferException) e.getCause()).failure() + " " + e.getCause().getMessage();
                }
                System.out.println("PUSHED " + outcome);
                System.out.flush();
                live(in);
                return;
            }
            if (args[0].equals("serve")) {
                DeviceBytes.HOST.write(memory, 0, bytes);
                PublishedChunks pool = new PublishedChunks(device, memory);
                System.out.println("ENDPOINT " + HexFormat.of().formatHex(t.advertise(pool).orElseThrow().bytes()));
            } else {
                System.out.println("READY");
            }
            System.out.flush();
            for (String line = in.readLine(); line != null; line = in.readLine()) {
                if (line.equals("live")) {
                    long[] live = Verbs.liveObjects();
                    System.out.println("LIVE " + live[0] + " " + live[1] + " " + live[2] + " " + live[3]);
                } else if (line.equals("fetch")) {
                    System.out.println(fetch(t, device, memory, bytes, chunks,
                            new Endpoint(Endpoint.RDMA, HexFormat.of().parseHex(args[3]))));
                }
                System.out.flush();
            }
        } finally {
            device.close();
        }
    }

    private static void receive(RdmaTransport t, DeviceBuffer memory, byte[] bytes, int chunks, long timeoutMillis,
                                BufferedReader in) throws Exception {
        long[] at = new long[chunks];
        long[] len = new long[chunks];
        int[] slot = shuffled(chunks);
        for (int c = 0; c < chunks; c++) {
            at[c] = (long) slot[c] * CHUNK;
            len[c] = CHUNK;
        }
        io.kvmarket.transfer.PushTransport.PushTarget target = t.expectPush(memory, at, len, timeoutMillis);
        System.out.println("TICKET " + HexFormat.of().formatHex(target.ticket()));
        System.out.flush();
        Thread answering = new Thread(() -> {
            try {
                live(in);
            } catch (java.io.IOException e) {
                // stdin gone: the test ended
            }
        });
        answering.start(); // live objects are asked while the push is under way
        String landed = "ok";
        try {
            target.landed().join();
        } catch (CompletionException e) {
            landed = "failed " + e.getCause().getMessage();
        }
        byte[] got = DeviceBytes.HOST.read(memory, 0, bytes.length);
        int wrong = -1;
        for (int c = 0; c < chunks && wrong < 0; c++) {
            if (!Arrays.equals(got, (int) at[c], (int) at[c] + CHUNK, bytes, c * CHUNK, (c + 1) * CHUNK)) {
                wrong = c;
            }
        }
        synchronized (System.out) {
            System.out.println("LANDED " + landed);
            System.out.println("RECEIVED " + wrong);
            System.out.flush();
        }
        answering.join();
    }

    /** Answers {@code live} on stdin until it closes. */
    private static void live(BufferedReader in) throws java.io.IOException {
        for (String line = in.readLine(); line != null; line = in.readLine()) {
            if (line.equals("live")) {
                long[] live = Verbs.liveObjects();
                synchronized (System.out) {
                    System.out.println("LIVE " + live[0] + " " + live[1] + " " + live[2] + " " + live[3]);
                    System.out.flush();
                }
            }
        }
    }

    /** A fixed shuffle of {@code n} slots. */
    private static int[] shuffled(int n) {
        List<Integer> s = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            s.add(i);
        }
        java.util.Collections.shuffle(s, new Random(99));
        return s.stream().mapToInt(Integer::intValue).toArray();
    }

    private static String fetch(RdmaTransport t, HostDevice device, DeviceBuffer memory, byte[] bytes, int chunks,
                                Endpoint endpoint) {
        DeviceBytes.HOST.write(memory, 0, new byte[bytes.length]);
        List<Offer> offers = new ArrayList<>();
        CopyBatch.Builder batch = CopyBatch.builder();
        for (int c = 0; c < chunks; c++) {
            offers.add(Offer.of(new ChunkKey(5, c), 1, ProcessIdentity.current(), endpoint, (long) c * CHUNK, CHUNK, 1,
                    c + 1, Long.MAX_VALUE));
            for (int s = 15; s >= 0; s--) {
                batch.add((long) c * CHUNK + s * (CHUNK / 16), (long) c * CHUNK + s * (CHUNK / 16), CHUNK / 16);
            }
        }
        int delivered = chunks;
        String failure = "NONE";
        try {
            t.fetch(offers, memory, batch.build()).join();
        } catch (CompletionException e) {
            TransferException te = (TransferException) e.getCause();
            delivered = te.chunksDelivered();
            failure = te.failure().name();
            System.out.println("WHY " + te.getMessage());
        }
        byte[] got = DeviceBytes.HOST.read(memory, 0, bytes.length);
        int wrong = -1;
        for (int c = 0; c < delivered && wrong < 0; c++) {
            if (!Arrays.equals(got, c * CHUNK, (c + 1) * CHUNK, bytes, c * CHUNK, (c + 1) * CHUNK)) {
                wrong = c;
            }
        }
        return "FETCHED " + delivered + " " + failure + " " + wrong;
    }
}
