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
        TcpConfig control = TcpConfig.of(SECRET).withBind(args[0].equals("serve") ? new InetSocketAddress(0) : null);
        RdmaConfig config = RdmaConfig.of(control);
        if (args[0].equals("fetch")) {
            config = config.withTimeouts(Long.parseLong(args[4]), config.ackTimeout(), config.retryCount());
        }
        try (RdmaTransport t = RdmaTransport.open(device, args[0].equals("serve") ? 1 : 2, config)) {
            DeviceBuffer memory = device.allocate(bytes.length);
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
