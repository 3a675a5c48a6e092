package io.kvmarket.transfer.rdma;

import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;
import io.kvmarket.testkit.DeviceBytes;
import io.kvmarket.transfer.TransferException;
import io.kvmarket.transfer.tcp.ClusterSecret;
import io.kvmarket.transfer.tcp.ControlChannel;
import io.kvmarket.transfer.tcp.TcpConfig;
import io.kvmarket.device.DeviceBuffer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Attacks on the exporter's control server: strangers without the secret, members sending malformed setup requests,
 * a member tearing down another member's channels, a member hoarding channels.
 */
@Timeout(120)
class RdmaControlAbuseTest extends RdmaRig {

    static final byte CONNECT = 1;
    static final byte PING = 2;
    static final byte RELEASE = 3;

    /** A CONNECT request as the wire format in RdmaTransport.Half says, with any field the attacker likes. */
    static byte[] connect(int q, int mtu, int lid, byte[] gid, int[] qpns, int[] psns, int declaredQ) {
        ByteBuffer b = ByteBuffer.allocate(5 + 16 + 8 * q);
        b.put(CONNECT).put((byte) declaredQ).put((byte) mtu).putShort((short) lid).put(gid);
        for (int i = 0; i < q; i++) {
            b.putInt(qpns[i]).putInt(psns[i]);
        }
        return b.array();
    }

    static byte[] connect(int q, int firstQpn) {
        int[] qpns = new int[q];
        int[] psns = new int[q];
        for (int i = 0; i < q; i++) {
            qpns[i] = firstQpn + i;
            psns[i] = 7;
        }
        return connect(q, 5, 0, gid(), qpns, psns, q);
    }

    /** A GID the fake would route to 127.0.0.1:9 (discard): nothing of ours listens there. */
    static byte[] gid() {
        byte[] g = new byte[16];
        g[9] = 9;
        g[10] = (byte) 0xff;
        g[11] = (byte) 0xff;
        g[12] = 127;
        g[15] = 1;
        return g;
    }

    static byte[] release(int qpn) {
        return ByteBuffer.allocate(5).put(RELEASE).putInt(qpn).array();
    }

    ControlChannel.Client member(ControlChannel.Connector connector, RdmaTransport exporter) throws IOException {
        ControlChannel.Client c = connector.connect(exporter.serving().orElseThrow());
        toClose.add(c);
        return c;
    }

    ControlChannel.Connector connector(ClusterSecret secret) {
        ControlChannel.Connector c = ControlChannel.connector(TcpConfig.of(secret).withBind(null));
        toClose.add(c);
        return c;
    }

    /** Channels the exporter process has open beyond the baseline, from the verbs counters. */
    long channels() {
        return Verbs.liveObjects()[2] - liveBefore[2];
    }

    /** A full import through a fresh importer; asserts it is exact. */
    void legitimateImportWorks(RdmaTransport exporter, Pool pool, Endpoint endpoint) {
        RdmaTransport importer = open(importerDevice, 2, importing());
        List<Offer> offers = pool.offers(endpoint, 9);
        DeviceBuffer dst = importerDevice.allocate(pool.bytes.length);
        importer.fetch(offers, dst, inPieces(pool.chunks, 4)).join();
        assertArrayEquals(pool.bytes, DeviceBytes.HOST.read(dst, 0, pool.bytes.length));
        importer.close();
    }

    @Test
    void aStrangerWithoutTheSecretGetsNoQueuePairsAndTheServerKeepsServing() throws Exception {
        RdmaTransport exporter = open(exporterDevice, 1, serving());
        Pool pool = new Pool(exporterDevice, 4, 1);
        Endpoint endpoint = exporter.advertise(pool.pool).orElseThrow();
        long[] before = Verbs.liveObjects();
        ControlChannel.Connector stranger = connector(ClusterSecret.of(
                "not-the-cluster-secret-at-all-000".getBytes(StandardCharsets.UTF_8)));
        for (int i = 0; i < 20; i++) {
            assertThrows(IOException.class, () -> stranger.connect(exporter.serving().orElseThrow()));
        }
        // Raw garbage, half a handshake, a huge length: from strangers who speak no protocol at all.
        InetSocketAddress at = exporter.serving().orElseThrow();
        Random r = new Random(5);
        for (int i = 0; i < 20; i++) {
            try (Socket s = new Socket(at.getAddress(), at.getPort())) {
                s.setSoTimeout(2000);
                OutputStream out = s.getOutputStream();
                byte[] junk = new byte[1 + r.nextInt(300)];
                r.nextBytes(junk);
                if (i % 3 == 0) {
                    ByteBuffer.wrap(junk).putInt(0, 0x4B564D54); // the protocol's magic, then junk
                }
                out.write(junk);
                out.flush();
                try {
                    s.getInputStream().read(new byte[64]);
                } catch (IOException ignored) {
                    // closed on us: fine
                }
            } catch (IOException ignored) {
                // refused or reset: fine
            }
        }
        assertArrayEquals(before, Verbs.liveObjects(), "strangers made no verbs object");
        legitimateImportWorks(exporter, pool, endpoint);
    }

    @Test
    void malformedSetupRequestsOfAMemberCreateNothingAndTheServerKeepsServing() throws Exception {
        RdmaTransport exporter = open(exporterDevice, 1, serving());
        Pool pool = new Pool(exporterDevice, 4, 2);
        Endpoint endpoint = exporter.advertise(pool.pool).orElseThrow();
        ControlChannel.Connector connector = connector(SECRET);
        long[] before = Verbs.liveObjects();
        int[] one = {100};
        int[] psn = {1};
        List<byte[]> bad = new ArrayList<>();
        bad.add(new byte[0]);
        bad.add(new byte[] {CONNECT});
        bad.add(new byte[] {PING, 0});
        bad.add(new byte[] {RELEASE, 0, 0});
        bad.add(new byte[] {9, 9, 9, 9, 9});
        bad.add(connect(1, 5, 0, gid(), one, psn, 0));        // declares 0 queue pairs
        bad.add(connect(1, 5, 0, gid(), one, psn, 2));        // declares 2, carries 1
        bad.add(connect(1, 0, 0, gid(), one, psn, 1));        // MTU code 0
        bad.add(connect(1, 6, 0, gid(), one, psn, 1));        // MTU code 6
        bad.add(connect(1, 255, 0, gid(), one, psn, 1));      // MTU code 255
        bad.add(ByteBuffer.allocate(5 + 16 + 8 * 65).put(CONNECT).put((byte) 65).put((byte) 5).array()); // 65 QPs
        bad.add(ByteBuffer.allocate(5 + 16 + 8 * 255).put(CONNECT).put((byte) 255).put((byte) 5).array()); // 255
        for (byte[] request : bad) {
            ControlChannel.Client c = member(connector, exporter);
            try {
                byte[] answer = c.call(request);
                assertTrue(answer.length >= 1 && answer[0] != 0 || request[0] == PING || request[0] == RELEASE,
                        "malformed request of " + request.length + " bytes was accepted");
            } catch (IOException expected) {
                // the server closed the connection: the documented answer to a malformed request
            }
            c.close();
        }
        // Well-formed but with values the verbs layer must refuse: QP numbers and PSNs out of 24 bits, LID 0xffff.
        List<byte[]> refused = new ArrayList<>();
        refused.add(connect(1, 5, 0, gid(), new int[] {-1}, psn, 1));
        refused.add(connect(1, 5, 0, gid(), new int[] {1 << 24}, psn, 1));
        refused.add(connect(2, 5, 0xffff, gid(), new int[] {5, 0x7fffffff}, new int[] {1, 2}, 2));
        for (byte[] request : refused) {
            ControlChannel.Client c = member(connector, exporter);
            try {
                byte[] answer = c.call(request);
                assertEquals(1, answer[0], "a QP number outside 24 bits was connected");
            } catch (IOException acceptable) {
                // closed: also no queue pair
            }
            c.close();
        }
        Thread.sleep(200); // sessions end on their own threads
        long[] after = Verbs.liveObjects();
        assertArrayEquals(before, after, "malformed requests left verbs objects at the exporter");
        legitimateImportWorks(exporter, pool, endpoint);
    }

    @Test
    void aMemberCannotReleaseAnotherMembersChannels() throws Exception {
        RdmaTransport exporter = open(exporterDevice, 1, serving());
        Pool pool = new Pool(exporterDevice, 8, 3);
        Endpoint endpoint = exporter.advertise(pool.pool).orElseThrow();
        RdmaTransport victim = open(importerDevice, 2, importing());
        List<Offer> offers = pool.offers(endpoint, 4);
        DeviceBuffer dst = importerDevice.allocate(pool.bytes.length);
        victim.fetch(offers, dst, inPieces(pool.chunks, 8)).join();
        long victimChannels = channels();
        assertEquals(2, victimChannels, "one channel a side");
        // The attacker learns the exporter's QP numbers the cheap way: it sets up channels itself and brute-forces
        // RELEASE over a wide range around them.
        ControlChannel.Client attacker = member(connector(SECRET), exporter);
        byte[] answer = attacker.call(connect(4, 1000));
        assertEquals(0, answer[0]);
        int attackersFirst = ByteBuffer.wrap(answer).getInt(21);
        for (int qpn = Math.max(0, attackersFirst - 4096); qpn < attackersFirst + 4096; qpn++) {
            if (qpn != attackersFirst) {
                attacker.call(release(qpn));
            }
        }
        assertEquals(victimChannels + 1, channels(), "the victim's channel at the exporter survives");
        DeviceBytes.HOST.write(dst, 0, new byte[pool.bytes.length]);
        victim.fetch(offers, dst, inPieces(pool.chunks, 8)).join();
        assertArrayEquals(pool.bytes, DeviceBytes.HOST.read(dst, 0, pool.bytes.length));
        assertEquals(victimChannels + 1, channels(), "the victim reused its channel: nobody tore it down");
        attacker.call(release(attackersFirst));
        assertEquals(victimChannels, channels(), "its own channel the attacker can release");
    }

    /** One member's session holds at most channelsPerPeer channels. */
    @Test
    void oneMemberCannotSetUpMoreThanChannelsPerPeerChannelsAtTheExporter() throws Exception {
        int perPeer = 2;
        RdmaTransport exporter = open(exporterDevice, 1, config(control(true), 4, 64, perPeer, 4, 10_000));
        exporter.advertise(new Pool(exporterDevice, 1, 4).pool).orElseThrow();
        ControlChannel.Client member = member(connector(SECRET), exporter);
        int accepted = 0;
        for (int i = 0; i < perPeer + 3; i++) {
            byte[] answer = member.call(connect(1, 5000 + i));
            if (answer[0] == 0) {
                accepted++;
            }
        }
        assertTrue(accepted <= perPeer, "one control session of one member set up " + accepted
                + " channels at the exporter; channelsPerPeer is " + perPeer);
    }

    /** One member asking again and again (one session, 64 queue pairs per request) leaves room for the others. */
    @Test
    void oneMemberCannotStarveOtherMembersOfChannels() throws Exception {
        int perPeer = 1; // the exporter's total is then 64 channels
        RdmaTransport exporter = open(exporterDevice, 1, config(control(true), 4, 64, perPeer, 4, 10_000));
        Pool pool = new Pool(exporterDevice, 2, 5);
        Endpoint endpoint = exporter.advertise(pool.pool).orElseThrow();
        ControlChannel.Client hoarder = member(connector(SECRET), exporter);
        int taken = 0;
        for (int i = 0; i < 64; i++) {
            byte[] answer = hoarder.call(connect(64, 100_000 + 64 * i));
            if (answer[0] == 0) {
                taken++;
            }
        }
        long queuePairs = Verbs.liveObjects()[3] - liveBefore[3];
        System.out.println("one member holds " + taken + " channels, " + queuePairs + " queue pairs at the exporter");
        RdmaTransport importer = open(importerDevice, 2, importing());
        List<Offer> offers = pool.offers(endpoint, 6);
        DeviceBuffer dst = importerDevice.allocate(pool.bytes.length);
        try {
            importer.fetch(offers, dst, inPieces(pool.chunks, 2)).join();
        } catch (java.util.concurrent.CompletionException e) {
            TransferException te = (TransferException) e.getCause();
            throw new AssertionError("a legitimate importer was refused after one member set up " + taken
                    + " channels (" + queuePairs + " queue pairs): " + te.failure() + " " + te.getMessage(), te);
        }
    }

    @Test
    void aMemberThatHangsUpTakesItsChannelsWithIt() throws Exception {
        RdmaTransport exporter = open(exporterDevice, 1, serving());
        exporter.advertise(new Pool(exporterDevice, 1, 6).pool).orElseThrow();
        ControlChannel.Connector connector = connector(SECRET);
        for (int round = 0; round < 5; round++) {
            ControlChannel.Client member = member(connector, exporter);
            for (int i = 0; i < 8; i++) {
                assertEquals(0, member.call(connect(8, 10_000 + 8 * i))[0]);
            }
            assertEquals(8, channels());
            member.close();
            long deadline = System.nanoTime() + 10_000_000_000L;
            while (channels() != 0 && System.nanoTime() < deadline) {
                Thread.sleep(10);
            }
            assertEquals(0, channels(), "round " + round);
        }
    }
}
