package io.kvmarket.transfer.tcp;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * Who gets a connection: under the limit every peer, whatever is still proving membership; at the limit, a host
 * flooding the server with connections that never prove anything loses its own, not a member's handshake in
 * flight on a slow link. Members answer the server's hello by hand here, after a delay standing for their round trip.
 */
@Timeout(120)
class TcpAdmissionTest extends ExporterAndImporter {

    private static final byte[] CLIENT = "client".getBytes(StandardCharsets.US_ASCII);

    /** A member's connection from {@code from}, its hello read; answered later by {@link #prove}. */
    private SocketChannel connect(InetSocketAddress server, InetAddress from) throws IOException {
        SocketChannel ch = SocketChannel.open();
        closeMe.add(ch);
        ch.bind(new InetSocketAddress(from, 0));
        ch.connect(server);
        return ch;
    }

    /** Reads the hello, waits {@code roundTripMillis}, answers it: "member" when the server proves itself back. */
    private static String prove(SocketChannel ch, long roundTripMillis) throws Exception {
        ByteBuffer hello = ByteBuffer.allocate(6 + Wire.NONCE_BYTES);
        while (hello.hasRemaining() && ch.read(hello) >= 0) {
            // reading the server's hello
        }
        if (hello.hasRemaining()) {
            return "closed before its hello";
        }
        byte[] serverNonce = new byte[Wire.NONCE_BYTES];
        hello.position(6).get(serverNonce);
        Thread.sleep(roundTripMillis);
        byte[] clientNonce = new byte[Wire.NONCE_BYTES];
        new SecureRandom().nextBytes(clientNonce);
        ByteBuffer answer = ByteBuffer.allocate(6 + Wire.NONCE_BYTES + Wire.MAC_BYTES);
        answer.putInt(Wire.MAGIC).putShort(Wire.VERSION).put(clientNonce)
                .put(TcpTransportContractTest.SECRET.mac(CLIENT, serverNonce, clientNonce)).flip();
        try {
            while (answer.hasRemaining()) {
                ch.write(answer);
            }
            ByteBuffer proof = ByteBuffer.allocate(Wire.MAC_BYTES);
            int r = 0;
            while (proof.hasRemaining() && (r = ch.read(proof)) >= 0) {
                // the server's proof
            }
            return r < 0 ? "dropped by the server" : "member";
        } catch (IOException e) {
            return "dropped by the server: " + e;
        }
    }

    /** Five members handshaking at once with 300 ms round trips, 8 connections allowed: none is dropped. */
    @Test
    void underTheLimitNoHandshakeInFlightIsDropped() throws Exception {
        TcpTransport server = open(exporterDevice, 1, TcpTransportContractTest.serving().withLimits(8, 4)
                .withTimeouts(5_000, 2_000, 60_000));
        server.advertise(pool).orElseThrow();
        InetSocketAddress at = server.serving().orElseThrow();
        List<SocketChannel> members = new ArrayList<>();
        for (int i = 0; i < 5; i++) {
            members.add(connect(at, LO));
        }
        List<String> outcomes = new ArrayList<>();
        for (SocketChannel ch : members) {
            outcomes.add(prove(ch, 300 / members.size()));
        }
        assertEquals(List.of("member", "member", "member", "member", "member"), outcomes);
    }

    /**
     * Default limits; another host opens a silent connection every 5 ms. A member on a link with a 300 ms round
     * trip gets in every time: the flood's connections make room, not the member's.
     */
    @Test
    void aHostFloodingTheServerDropsItsOwnConnectionsNotAMembersHandshake() throws Exception {
        InetSocketAddress at = serving();
        List<String> outcomes = underFlood(at, 1, 5, () -> prove(connect(at, LO), 300));
        assertEquals(List.of("member", "member", "member"), outcomes);
    }

    /**
     * A stranger flooding from 200 addresses (one host's many, as an IPv6 /64 gives) looks like 200 hosts of one
     * connection each: a member that proved membership from its address before gets in every time, and no
     * handshake of its is dropped for the flood's.
     */
    @Test
    void aFloodFromManyAddressesDropsNoHandshakeOfAKnownMember() throws Exception {
        InetSocketAddress at = serving();
        assertEquals("member", prove(connect(at, LO), 0), "the member, before the flood");
        List<String> outcomes = underFlood(at, 200, 2, () -> prove(connect(at, LO), 300));
        assertEquals(List.of("member", "member", "member"), outcomes);
    }

    /**
     * A stranger on a member's own host (an address members proved from) floods from it: its connections still go
     * first, since that address is the busiest, and a member from another host never seen before gets in.
     */
    @Test
    void aFloodFromAMembersAddressDropsItsOwnNotANewMembersHandshake() throws Exception {
        InetSocketAddress at = serving();
        assertEquals("member", prove(connect(at, InetAddress.getByName("127.0.0.2")), 0), "the flood's host's member");
        InetAddress newMember = InetAddress.getByName("127.0.0.250");
        List<String> outcomes = underFlood(at, 1, 5, () -> prove(connect(at, newMember), 300));
        assertEquals(List.of("member", "member", "member"), outcomes);
    }

    private InetSocketAddress serving() throws Exception {
        TcpTransport server = open(exporterDevice, 1, TcpTransportContractTest.serving());
        server.advertise(pool).orElseThrow();
        return server.serving().orElseThrow();
    }

    private interface Attempt {
        String run() throws Exception;
    }

    /**
     * Silent connections from 127.0.0.2 onwards ({@code addresses} of them in turn), one every {@code everyMillis},
     * for a second and then during three {@code attempt}s; their outcomes.
     */
    private static List<String> underFlood(InetSocketAddress at, int addresses, long everyMillis, Attempt attempt)
            throws Exception {
        AtomicBoolean stop = new AtomicBoolean();
        List<Socket> held = new ArrayList<>();
        Thread flood = new Thread(() -> {
            for (int n = 0; !stop.get(); n++) {
                try {
                    Socket s = new Socket();
                    held.add(s);
                    s.bind(new InetSocketAddress(InetAddress.getByName("127.0.0." + (2 + n % addresses)), 0));
                    s.connect(at, 1_000);
                    Thread.sleep(everyMillis);
                } catch (IOException | InterruptedException e) {
                    // refused or dropped: the flood goes on
                }
            }
        }, "flood");
        flood.start();
        try {
            Thread.sleep(1_000); // past the limit: the flood's connections outnumber it
            List<String> outcomes = new ArrayList<>();
            for (int i = 0; i < 3; i++) {
                outcomes.add(attempt.run());
            }
            return outcomes;
        } finally {
            stop.set(true);
            flood.join(10_000);
            for (Socket s : held) {
                s.close();
            }
        }
    }
}
