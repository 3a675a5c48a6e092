package io.kvmarket.transfer.tcp;

import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;
import io.kvmarket.transfer.TransferException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * A server under abuse: idle members and silent strangers at the connection limit, an on-path relay rewriting bytes,
 * close() with fetches queued, many transports in one JVM, a member cut mid-request. Members stay served, rewritten
 * bytes never count, nothing is left running.
 */
@Timeout(120)
class TcpServerAbuseTest extends ExporterAndImporter {

    /**
     * Importers that once fetched keep idle connections to the server: at the server's connection limit they must
     * make room for a new importer, not lock it out for the idle timeout.
     */
    @Test
    void idlePooledConnectionsOfOtherImportersLockOutANewImporter() {
        TcpTransport server = open(exporterDevice, 1, TcpTransportContractTest.serving().withLimits(2, 4));
        Endpoint e = server.advertise(pool).orElseThrow();
        Offer o = publish(e, 0);
        List<Offer> one = List.of(o);
        for (int i = 0; i < 2; i++) {
            TcpTransport importer = open(importerDevice, 10 + i, TcpTransportContractTest.fetchingOnly());
            assertEquals("ok", outcome(importer.fetch(one, destination, inOrder(one)), 30));
        }
        TcpTransport third = open(importerDevice, 20, TcpTransportContractTest.fetchingOnly());
        String r = outcome(third.fetch(one, destination, inOrder(one)), 30);
        assertEquals("ok", r, "a third importer is refused while two others merely keep an idle pooled connection");
    }

    /**
     * Peers that do not hold the secret connect and say nothing, as many as the server allows: a member must still be
     * served.
     */
    @Test
    void nonMembersThatConnectAndStaySilentLockOutMembers() throws Exception {
        TcpTransport server = open(exporterDevice, 1, TcpTransportContractTest.serving().withLimits(4, 4)
                .withTimeouts(5000, 2000, 60_000));
        Endpoint e = server.advertise(pool).orElseThrow();
        InetSocketAddress at = server.serving().orElseThrow();
        List<Socket> silent = new ArrayList<>();
        for (int i = 0; i < 4; i++) {
            Socket s = new Socket(at.getAddress(), at.getPort());
            silent.add(s);
            closeMe.add(s);
        }
        Thread.sleep(200);
        Offer o = publish(e, 0);
        List<Offer> one = List.of(o);
        TcpTransport member = open(importerDevice, 2, TcpTransportContractTest.fetchingOnly());
        String r = outcome(member.fetch(one, destination, inOrder(one)), 30);
        assertEquals("ok", r, "4 silent non-member sockets lock a member out");
    }

    /**
     * An on-path relay that does not know the secret passes the handshake through, then flips one byte of a chunk:
     * the chunk fails its MAC, and the fetch never reports those bytes delivered.
     */
    @Test
    void anOnPathRelayWithoutTheSecretRewritesChunkBytesAndTheFetchSucceeds() throws Exception {
        TcpTransport server = open(exporterDevice, 1, TcpTransportContractTest.serving());
        Endpoint real = server.advertise(pool).orElseThrow();
        TcpEndpoint te = TcpEndpoint.decode(real);
        ServerSocket relay = new ServerSocket(0, 50, LO);
        closeMe.add(relay);
        Thread t = new Thread(() -> {
            try (Socket client = relay.accept(); Socket up = new Socket(te.address().getAddress(), te.address().getPort())) {
                Thread c2s = new Thread(() -> pipe(client, up, -1));
                c2s.setDaemon(true);
                c2s.start();
                // server -> client: hello 38 + proof 32 = 70, then DATA status at 70, chunk bytes from 71
                pipe(up, client, 71 + 1000);
            } catch (Exception ignored) {
            }
        });
        t.setDaemon(true);
        t.start();
        Endpoint viaRelay = new TcpEndpoint(new InetSocketAddress(LO, relay.getLocalPort()), te.poolId()).encode();
        Offer o = publish(viaRelay, 2);
        List<Offer> one = List.of(o);
        TcpTransport importer = open(importerDevice, 2, TcpTransportContractTest.fetchingOnly());
        String r = outcome(importer.fetch(one, destination, inOrder(one)), 30);
        assertTrue(r.contains("fails its MAC") && r.contains("after 0 of 1 chunks"), r);
    }

    static void pipe(Socket from, Socket to, long flipAt) {
        try {
            InputStream in = from.getInputStream();
            OutputStream out = to.getOutputStream();
            byte[] buf = new byte[8192];
            long pos = 0;
            for (int n; (n = in.read(buf)) > 0; ) {
                if (flipAt >= pos && flipAt < pos + n) {
                    buf[(int) (flipAt - pos)] ^= 0x5A;
                }
                pos += n;
                out.write(buf, 0, n);
            }
            to.shutdownOutput();
        } catch (Exception ignored) {
        }
    }

    static long tcpThreads() {
        return Thread.getAllStackTraces().keySet().stream()
                .filter(th -> th.isAlive() && th.getName().startsWith("kvmarket-tcp-")).count();
    }

    /** close() with many fetches queued behind a server that never answers: every future completes, no thread stays. */
    @Test
    void closeWithQueuedFetchesCompletesEveryFutureAndLeavesNoThread() throws Exception {
        long before = tcpThreads();
        ServerSocket mute = new ServerSocket(0, 200, LO);
        closeMe.add(mute);
        List<Socket> accepted = new ArrayList<>();
        Thread acc = new Thread(() -> {
            try {
                while (true) {
                    accepted.add(mute.accept());
                }
            } catch (Exception ignored) {
            }
        });
        acc.setDaemon(true);
        acc.start();
        Endpoint e = new TcpEndpoint(new InetSocketAddress(LO, mute.getLocalPort()), 42).encode();
        List<Offer> one = List.of(publish(e, 0));
        List<TcpTransport> ts = new ArrayList<>();
        List<CompletableFuture<Void>> fs = new ArrayList<>();
        for (int k = 0; k < 10; k++) {
            TcpTransport t = TcpTransport.open(importerDevice, 2, TcpTransportContractTest.serving().withLimits(4, 2)
                    .withTimeouts(30_000, 30_000, 60_000));
            ts.add(t);
            for (int i = 0; i < 20; i++) {
                fs.add(t.fetch(one, destination, inOrder(one)));
            }
        }
        Thread.sleep(300);
        long t0 = System.nanoTime();
        for (TcpTransport t : ts) {
            t.close();
        }
        long closeMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - t0);
        for (CompletableFuture<Void> f : fs) {
            try {
                f.get(5, TimeUnit.SECONDS);
                fail("a fetch from a mute server succeeded");
            } catch (java.util.concurrent.ExecutionException expected) {
                assertTrue(expected.getCause() instanceof TransferException, expected.toString());
            }
        }
        Thread.sleep(500);
        assertEquals(before, tcpThreads(), "kvmarket-tcp-* threads left after close: " + threadNames());
        assertTrue(closeMs < 5000, "closing 10 transports took " + closeMs + " ms");
        for (Socket s : accepted) {
            s.close();
        }
    }

    static String threadNames() {
        return Thread.getAllStackTraces().keySet().stream().map(Thread::getName)
                .filter(n -> n.startsWith("kvmarket-tcp-")).sorted().toList().toString();
    }

    /** Serving threads of a transport whose importers went away end, and close leaves nothing. */
    @Test
    void manyTransportsInOneJvmLeaveNoThreadsAfterClose() throws Exception {
        long before = tcpThreads();
        List<TcpTransport> servers = new ArrayList<>();
        List<TcpTransport> clients = new ArrayList<>();
        for (int i = 0; i < 8; i++) {
            TcpTransport s = TcpTransport.open(exporterDevice, 1, TcpTransportContractTest.serving());
            servers.add(s);
            Endpoint e = s.advertise(pool).orElseThrow();
            TcpTransport c = TcpTransport.open(importerDevice, 2, TcpTransportContractTest.fetchingOnly());
            clients.add(c);
            List<Offer> one = List.of(publish(e, i));
            assertEquals("ok", outcome(c.fetch(one, destination, inOrder(one)), 30));
        }
        for (int i = 0; i < 8; i++) {
            servers.get(i).close();
            clients.get(i).close();
        }
        Thread.sleep(500);
        assertEquals(before, tcpThreads(), "threads left: " + threadNames());
    }

    /** A member that completes the handshake then announces a full request and sends half: its thread is freed. */
    @Test
    void aMemberSendingAPartialRequestIsCutAfterTheIoTimeout() throws Exception {
        TcpTransport server = open(exporterDevice, 1, TcpTransportContractTest.serving().withTimeouts(1000, 500, 60_000));
        server.advertise(pool).orElseThrow();
        InetSocketAddress at = server.serving().orElseThrow();
        try (java.nio.channels.SocketChannel ch = java.nio.channels.SocketChannel.open(at)) {
            Connection c = new Connection(ch, at, 10_000);
            Wire.clientHandshake(c, TcpTransportContractTest.SECRET);
            java.nio.ByteBuffer req = java.nio.ByteBuffer.allocate(Wire.REQUEST_HEADER_BYTES + 40);
            req.putInt(Wire.REQUEST).putInt(0).putLong(1).putInt(TcpServer.MAX_CHUNKS).putLong(1).flip();
            c.writeFully(req);
            long t0 = System.nanoTime();
            while (server.servedConnections() > 0 && System.nanoTime() - t0 < TimeUnit.SECONDS.toNanos(5)) {
                Thread.sleep(20);
            }
            assertEquals(0, server.servedConnections());
        }
    }
}
