package io.kvmarket.transfer.tcp;

import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Peers that trickle the handshake are cut at the connect timeout on either side, and a server whose accept() failed
 * for a while (the process out of file descriptors) serves again once it can.
 */
@Timeout(120)
class TcpTimeoutsAndRecoveryTest extends ExporterAndImporter {

    /**
     * A non-member trickling its 70-byte answer one byte per (ioTimeout - e): byte progress must not push out the
     * handshake's deadline, or it keeps a connection and a server thread for ~70 x ioTimeout.
     */
    @Test
    void aStrangerTricklingTheHandshakeIsCutAtTheConnectTimeout() throws Exception {
        TcpTransport server = open(exporterDevice, 1, TcpTransportContractTest.serving()
                .withTimeouts(200, 1500, 60_000));
        server.advertise(pool).orElseThrow();
        InetSocketAddress at = server.serving().orElseThrow();
        try (Socket s = new Socket(at.getAddress(), at.getPort())) {
            InputStream in = s.getInputStream();
            OutputStream out = s.getOutputStream();
            in.readNBytes(6 + Wire.NONCE_BYTES); // the hello
            long t0 = System.nanoTime();
            boolean open = true;
            for (int i = 0; i < 6 && open; i++) { // 6 s of trickling, well under the 70 bytes of the answer
                Thread.sleep(1000);
                try {
                    out.write(0x4B); // a byte of whatever; the server cannot judge it before the 70th
                    out.flush();
                } catch (IOException closed) {
                    open = false;
                }
                open &= server.servedConnections() > 0;
            }
            long ms = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - t0);
            assertTrue(!open, "a non-member still holds a served connection (and thread) " + ms
                    + " ms after the hello, with connectTimeout 200 ms; servedConnections="
                    + server.servedConnections());
        }
    }

    /**
     * The same on the importer: a listener at an advertised address trickling its 38-byte hello ends the fetch at
     * the connect timeout.
     */
    @Test
    void aServerTricklingItsHelloEndsTheFetchAtTheConnectTimeout() throws Exception {
        TcpTransport importer = open(importerDevice, 2, TcpTransportContractTest.fetchingOnly()
                .withTimeouts(200, 1500, 60_000));
        try (ServerSocketChannel ss = ServerSocketChannel.open()) {
            ss.bind(new InetSocketAddress(LO, 0));
            Endpoint e = new TcpEndpoint((InetSocketAddress) ss.getLocalAddress(), 9).encode();
            List<Offer> one = List.of(publish(e, 0));
            CompletableFuture<Void> f = importer.fetch(one, destination, inOrder(one));
            Thread trickler = new Thread(() -> {
                try (SocketChannel ch = ss.accept()) {
                    ByteBuffer hello = ByteBuffer.allocate(6 + Wire.NONCE_BYTES).putInt(Wire.MAGIC)
                            .putShort(Wire.VERSION);
                    hello.flip();
                    while (hello.hasRemaining()) {
                        ch.write(ByteBuffer.wrap(new byte[] {hello.get()}));
                        Thread.sleep(1000);
                    }
                    Thread.sleep(60_000);
                } catch (Exception ignored) {
                }
            });
            trickler.setDaemon(true);
            trickler.start();
            String r = outcome(f, 5);
            trickler.interrupt();
            assertTrue(!r.startsWith("still running"),
                    "fetch with connectTimeout 200 ms is " + r + " against a server trickling its hello");
        }
    }

    /**
     * The process briefly out of file descriptors (anything in it can cause that) makes accept() fail: the server
     * must serve members again once descriptors are free.
     */
    @Test
    void theServerAcceptsAgainAfterTheProcessRanOutOfFileDescriptors() throws Exception {
        TcpTransport server = open(exporterDevice, 1, TcpTransportContractTest.serving());
        Endpoint e = server.advertise(pool).orElseThrow();
        InetSocketAddress at = server.serving().orElseThrow();
        List<Offer> one = List.of(publish(e, 0));
        TcpTransport importer = open(importerDevice, 2, TcpTransportContractTest.fetchingOnly());
        assertEquals("ok", outcome(importer.fetch(one, destination, inOrder(one)), 10), "works before");
        importer.close();

        SocketChannel poke = SocketChannel.open(); // its fd exists before the exhaustion
        List<FileChannel> hoard = new ArrayList<>();
        Path devNull = Path.of("/dev/null");
        try {
            while (true) {
                try {
                    hoard.add(FileChannel.open(devNull, StandardOpenOption.READ));
                } catch (IOException full) {
                    break;
                }
            }
            try {
                poke.connect(at); // no new fd needed on this side; the server's accept() now fails with EMFILE
            } catch (IOException ignored) {
            }
            Thread.sleep(300);
        } finally {
            for (FileChannel f : hoard) {
                f.close();
            }
            poke.close();
        }
        Thread.sleep(200);
        boolean acceptorAlive = Thread.getAllStackTraces().keySet().stream()
                .anyMatch(t -> t.isAlive() && t.getName().startsWith("kvmarket-tcp-accept-"));
        TcpTransport later = open(importerDevice, 3, TcpTransportContractTest.fetchingOnly());
        String r = outcome(later.fetch(one, destination, inOrder(one)), 10);
        assertEquals("ok", r, "after " + hoard.size() + " fds were briefly exhausted, acceptor thread alive="
                + acceptorAlive + "; the server still advertises " + at);
    }
}
