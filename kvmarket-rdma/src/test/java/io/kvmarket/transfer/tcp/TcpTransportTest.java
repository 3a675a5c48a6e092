package io.kvmarket.transfer.tcp;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;
import io.kvmarket.transfer.TransferException;
import io.kvmarket.transfer.TransferFailure;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import javax.crypto.Mac;
import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * What the TCP transport promises beyond the contract: it serves only what a pool publishes now and keeps a cut
 * stream's prefix; only cluster members are served, and a peer that is not one, a malformed or oversized frame, a
 * stalled or dead server each end as a miss with a reason for that one transfer while the server goes on serving.
 */
@Timeout(60)
class TcpTransportTest extends ExporterAndImporter {

    TcpTransport server;
    TcpTransport client;
    Endpoint endpoint;

    @BeforeEach
    void openTransports() {
        server = open(exporterDevice, 1, TcpTransportContractTest.serving());
        client = open(importerDevice, 2, TcpTransportContractTest.fetchingOnly());
        endpoint = server.advertise(pool).orElseThrow();
    }

    Offer publish(int slot) {
        return publish(endpoint, slot);
    }

    static TransferException failure(CompletableFuture<Void> f) {
        CompletionException e = assertThrows(CompletionException.class, f::join);
        return assertInstanceOf(TransferException.class, e.getCause());
    }

    @Test
    void aChunkThePoolNoLongerPublishesIsNotServedAndTheCutKeepsItsPrefix() {
        List<Offer> chunks = List.of(publish(7), publish(2), publish(11));
        pool.withdraw(chunks.get(1).key());
        TransferException e = failure(client.fetch(chunks, destination, inOrder(chunks)));
        assertEquals(TransferFailure.SOURCE_GONE, e.failure());
        assertEquals(1, e.chunksDelivered(), e.getMessage());
        assertArrayEquals(sourceChunk(chunks.get(0)), destinationSlot(0));
        assertArrayEquals(new byte[CHUNK], destinationSlot(1), "nothing of the withdrawn chunk");
        assertArrayEquals(new byte[CHUNK], destinationSlot(2), "nothing after the cut");
        assertEquals(0, pool.holdsOpen(), "every hold released");
        // The connection stayed in step: the next pull on it is exact.
        Offer again = publish(3);
        client.fetch(List.of(again), destination, inOrder(List.of(again))).join();
        assertArrayEquals(sourceChunk(again), destinationSlot(0));
        assertEquals(1, client.pooledConnections());
    }

    @Test
    void anotherGenerationOrSpanOfAPublishedKeyIsNotServed() {
        Offer o = publish(4);
        Offer otherGeneration = new Offer(o.key(), 1, o.owner(), o.endpoints(), o.offset(), CHUNK, 1,
                o.generation() + 1, Long.MAX_VALUE);
        assertEquals(TransferFailure.SOURCE_GONE,
                failure(client.fetch(List.of(otherGeneration), destination, inOrder(List.of(otherGeneration)))).failure());
        Offer otherSpan = new Offer(o.key(), 1, o.owner(), o.endpoints(), o.offset() + CHUNK, CHUNK, 1,
                o.generation(), Long.MAX_VALUE);
        assertEquals(TransferFailure.SOURCE_GONE,
                failure(client.fetch(List.of(otherSpan), destination, inOrder(List.of(otherSpan)))).failure());
        assertEquals(0, pool.holdsTaken(), "nothing held for a publication the pool does not have");
    }

    @Test
    void aClientWithAnotherSecretIsRefusedAndTheServerGoesOnServingMembers() {
        TcpTransport stranger = TcpTransport.open(importerDevice, 3,
                TcpConfig.of(ClusterSecret.of("another-cluster-entirely!".getBytes(StandardCharsets.UTF_8))).withBind(null));
        try {
            Offer o = publish(0);
            TransferException e = failure(stranger.fetch(List.of(o), destination, inOrder(List.of(o))));
            assertEquals(TransferFailure.UNREACHABLE, e.failure(), e.getMessage());
            assertEquals(0, pool.holdsTaken(), "a stranger is served nothing");
            client.fetch(List.of(o), destination, inOrder(List.of(o))).join();
            assertArrayEquals(sourceChunk(o), destinationSlot(0));
        } finally {
            stranger.close();
        }
    }

    @Test
    void aServerWithAnotherSecretIsNotTrusted() {
        TcpTransport impostor = TcpTransport.open(exporterDevice, 1,
                TcpConfig.of(ClusterSecret.of("an-impostor-with-its-own-kv".getBytes(StandardCharsets.UTF_8)))
                        .withBind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0)));
        try {
            Endpoint fake = impostor.advertise(pool).orElseThrow();
            Offer o = offerAt(fake, 0);
            pool.publish(o.key(), o.generation(), o.offset(), o.length());
            TransferException e = failure(client.fetch(List.of(o), destination, inOrder(List.of(o))));
            assertEquals(TransferFailure.UNREACHABLE, e.failure(), e.getMessage());
            assertArrayEquals(new byte[CHUNK], destinationSlot(0));
        } finally {
            impostor.close();
        }
    }

    /** Raw peers speaking garbage or forging requests: each loses its own connection, members are still served. */
    @Test
    void malformedAndOversizedFramesCloseOnlyTheirConnection() throws Exception {
        InetSocketAddress at = server.serving().orElseThrow();
        Offer o = publish(5);
        // Not the protocol at all.
        try (Socket s = new Socket(at.getAddress(), at.getPort())) {
            s.getOutputStream().write("GET / HTTP/1.1\r\n\r\n".getBytes(StandardCharsets.US_ASCII));
            assertClosedByPeer(s);
        }
        // A member whose request is malformed: zero chunks, then more chunks than a request may name, then a
        // wrong magic; none may make the server allocate what the frame claims.
        for (int[] frame : new int[][] {{Wire.REQUEST, 0}, {Wire.REQUEST, TcpServer.MAX_CHUNKS + 1},
                {Wire.REQUEST, Integer.MAX_VALUE}, {0x12345678, 1}}) {
            try (SocketChannel ch = SocketChannel.open(at)) {
                Connection c = new Connection(ch, at, 2000);
                Wire.clientHandshake(c, TcpTransportContractTest.SECRET);
                ByteBuffer req = ByteBuffer.allocate(Wire.REQUEST_HEADER_BYTES);
                req.putInt(frame[0]).putInt(0).putLong(0).putInt(frame[1]).flip();
                c.writeFully(req);
                assertClosedByPeer(ch.socket());
            }
        }
        // A well-formed request under a MAC that is not the session's (what a stranger relaying a member's
        // handshake would send): closed, nothing held.
        try (SocketChannel ch = SocketChannel.open(at)) {
            Connection c = new Connection(ch, at, 2000);
            Wire.clientHandshake(c, TcpTransportContractTest.SECRET);
            ByteBuffer req = ByteBuffer.allocate(Wire.REQUEST_HEADER_BYTES + Wire.CHUNK_ENTRY_BYTES + Wire.MAC_BYTES);
            TcpEndpoint te = TcpEndpoint.decode(endpoint);
            req.putInt(Wire.REQUEST).putInt(0).putLong(te.poolId()).putInt(1).putLong(o.key().hi()).putLong(o.key().lo())
                    .putLong(o.generation()).putLong(o.offset()).putLong(o.length()).put(new byte[Wire.MAC_BYTES]).flip();
            c.writeFully(req);
            assertClosedByPeer(ch.socket());
            assertEquals(0, pool.holdsTaken(), "a request without the session's MAC is served nothing");
        }
        client.fetch(List.of(o), destination, inOrder(List.of(o))).join();
        assertArrayEquals(sourceChunk(o), destinationSlot(0));
    }

    @Test
    void aPeerThatNeverFinishesTheHandshakeIsDroppedAfterTheConnectTimeout() throws Exception {
        InetSocketAddress at = server.serving().orElseThrow();
        try (Socket s = new Socket(at.getAddress(), at.getPort())) {
            long start = System.nanoTime();
            assertClosedByPeer(s);
            long ms = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start);
            assertTrue(ms < 10_000, "dropped after " + ms + " ms");
        }
    }

    /** Members idle at the connection limit make room: the longest idle is dropped for the new connection. */
    @Test
    void idleMembersAtTheConnectionLimitMakeRoomForANewOne() throws Exception {
        server.close();
        server = open(exporterDevice, 1, TcpTransportContractTest.serving().withLimits(2, 4));
        endpoint = server.advertise(pool).orElseThrow();
        InetSocketAddress at = server.serving().orElseThrow();
        Offer o = publish(6);
        List<SocketChannel> idleMembers = new ArrayList<>();
        try {
            for (int i = 0; i < 2; i++) {
                SocketChannel ch = SocketChannel.open(at);
                Wire.clientHandshake(new Connection(ch, at, 2000), TcpTransportContractTest.SECRET);
                idleMembers.add(ch);
            }
            client.fetch(List.of(o), destination, inOrder(List.of(o))).join();
            assertArrayEquals(sourceChunk(o), destinationSlot(0));
            assertTrue(server.servedConnections() <= 2, server.servedConnections() + " connections served");
        } finally {
            for (SocketChannel ch : idleMembers) {
                ch.close();
            }
        }
    }

    @Test
    void nothingListeningIsASourceGoneMiss() throws Exception {
        Offer o = publish(1);
        server.close();
        assertEquals(TransferFailure.SOURCE_GONE, failure(client.fetch(List.of(o), destination, inOrder(List.of(o))))
                .failure());
    }

    /**
     * A server that proves membership, then sends one whole chunk and half of the next and stalls: the import
     * fails within the I/O timeout and keeps the whole chunk.
     */
    @Test
    void aServerStallingMidChunkFailsTheTransferAfterTheIoTimeoutKeepingWholeChunks() throws Exception {
        client.close();
        client = open(importerDevice, 2, TcpTransportContractTest.fetchingOnly().withTimeouts(1000, 300, 60_000));
        try (ServerSocketChannel stall = ServerSocketChannel.open()) {
            stall.bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0));
            InetSocketAddress at = (InetSocketAddress) stall.getLocalAddress();
            Endpoint fake = new TcpEndpoint(at, 77).encode();
            List<Offer> chunks = List.of(offerAt(fake, 0), offerAt(fake, 1));
            CompletableFuture<Void> fetch = client.fetch(chunks, destination, inOrder(chunks));
            try (SocketChannel ch = stall.accept()) {
                Connection c = new Connection(ch, at, 5000);
                Mac mac = Wire.sessionMac(Wire.serverHandshake(c, TcpTransportContractTest.SECRET));
                ByteBuffer request = ByteBuffer.allocate(Wire.REQUEST_HEADER_BYTES + 2 * Wire.CHUNK_ENTRY_BYTES
                        + Wire.MAC_BYTES);
                c.readFully(request);
                byte[] tag = new byte[Wire.MAC_BYTES];
                Wire.chunkMacStart(mac, 0, 0, request.array(), Wire.REQUEST_HEADER_BYTES);
                mac.update(sourceBytes, 0, CHUNK);
                Wire.chunkMacEnd(mac, tag);
                ByteBuffer data = ByteBuffer.allocate(1 + CHUNK + Wire.MAC_BYTES + 1 + CHUNK / 2);
                data.put(Wire.DATA).put(sourceBytes, 0, CHUNK).put(tag).put(Wire.DATA).put(sourceBytes, CHUNK, CHUNK / 2)
                        .flip();
                c.writeFully(data);
                long start = System.nanoTime();
                TransferException e = failure(fetch);
                assertEquals(TransferFailure.FAILED, e.failure());
                assertEquals(1, e.chunksDelivered(), e.getMessage());
                assertTrue(TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start) < 5000);
                assertArrayEquals(Arrays.copyOf(sourceBytes, CHUNK), destinationSlot(0));
            }
        }
    }

    @Test
    void closingTheTransportFailsAFetchInFlightAtOnce() throws Exception {
        try (ServerSocketChannel silent = ServerSocketChannel.open()) {
            silent.bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0));
            Endpoint fake = new TcpEndpoint((InetSocketAddress) silent.getLocalAddress(), 77).encode();
            Offer o = offerAt(fake, 0);
            CompletableFuture<Void> fetch = client.fetch(List.of(o), destination, inOrder(List.of(o)));
            try (SocketChannel ch = silent.accept()) { // accepted, never greeted
                Thread.sleep(100);
                client.close();
                assertEquals(TransferFailure.FAILED, failure(fetch).failure());
            }
        }
    }

    /** Random endpoint bytes: a malformed-offer miss or an unreachable peer, never an exception or a byte written. */
    @Test
    void randomEndpointBytesAreMissesNeverCrashes() {
        Random rnd = new Random(11);
        for (int i = 0; i < 200; i++) {
            byte[] bytes = new byte[1 + rnd.nextInt(40)];
            rnd.nextBytes(bytes);
            if (i % 2 == 0 && bytes.length >= 2) {
                bytes[0] = 1; // past the version check, into the address parsing
                bytes[1] = (byte) (rnd.nextBoolean() ? 4 : 16);
            }
            Offer o = offerAt(new Endpoint(Endpoint.TCP, bytes), 0);
            TransferFailure f = failure(client.fetch(List.of(o), destination, inOrder(List.of(o)))).failure();
            assertTrue(f == TransferFailure.MALFORMED || f == TransferFailure.UNREACHABLE
                    || f == TransferFailure.SOURCE_GONE, f.toString());
        }
        assertArrayEquals(new byte[CHUNK], destinationSlot(0));
    }

    @Test
    void aPlanReadingOutsideItsChunksIsAProgrammingError() {
        Offer o = publish(2);
        CopyBatch outside = CopyBatch.builder().add(o.offset() + CHUNK, 0, 16).build();
        assertThrows(IllegalArgumentException.class, () -> client.fetch(List.of(o), destination, outside));
        CopyBatch twice = CopyBatch.builder().add(o.offset(), 0, 64).add(o.offset() + 32, 4096, 64).build();
        assertThrows(IllegalArgumentException.class, () -> client.fetch(List.of(o), destination, twice));
        CopyBatch past = CopyBatch.builder().add(o.offset(), destination.size() - 8, 16).build();
        assertThrows(IllegalArgumentException.class, () -> client.fetch(List.of(o), destination, past));
    }

    @Test
    void closedPoolsAreForgotten() {
        assertEquals(1, server.servedPools());
        pool.close();
        server.evictStale();
        assertEquals(0, server.servedPools());
    }

    private static void assertClosedByPeer(Socket s) throws IOException {
        s.setSoTimeout(10_000);
        byte[] buf = new byte[4096];
        try {
            while (s.getInputStream().read(buf) >= 0) {
                // the greeting, then the end
            }
        } catch (java.net.SocketException reset) {
            // closed with unread data: a reset is a close too
        }
    }
}
