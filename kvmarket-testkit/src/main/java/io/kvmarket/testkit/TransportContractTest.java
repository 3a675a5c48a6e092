package io.kvmarket.testkit;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.device.Device;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.NodeId;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;
import io.kvmarket.transfer.TransferException;
import io.kvmarket.transfer.TransferFailure;
import io.kvmarket.transfer.Transport;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Behaviour every {@link Transport} must have, both sides: the exporter's transport advertises an endpoint for
 * its memory; through it, the importer's transport routes to an offer and moves exactly the bytes of every
 * segment into the importer's buffer, and every runtime failure completes the fetch exceptionally with a
 * {@link TransferException} whose failure says what went wrong, never with wrong bytes. Each implementation's
 * test extends this and supplies the two devices and the two transports.
 */
@Timeout(60)
public abstract class TransportContractTest {

    protected static final int SOURCE_BYTES = 1 << 20;

    private Device exporter;
    private Device importer;
    private Transport exporterSide;
    private Transport transport;
    private DeviceBuffer source;
    private DeviceBuffer destination;
    private byte[] sourceBytes;

    /** The device the exporter's memory lives on. */
    protected abstract Device exporterDevice();

    /** The device the importer copies into (may be the exporter's). */
    protected abstract Device importerDevice();

    /** Host access to both devices' memory. */
    protected abstract DeviceBytes bytes();

    /** The transport under test on the exporter's side, advertising memory of {@code exporter}. */
    protected abstract Transport exporterTransport(Device exporter);

    /** The transport under test on the importer's side, importing into {@code importer}. */
    protected abstract Transport importerTransport(Device importer);

    /** The node the exporter's offers name. */
    protected long exporterNodeId() {
        return NodeId.local();
    }

    @BeforeEach
    void setUp() {
        exporter = exporterDevice();
        importer = importerDevice();
        exporterSide = exporterTransport(exporter);
        transport = importerTransport(importer);
        source = exporter.allocate(SOURCE_BYTES);
        destination = importer.allocate(SOURCE_BYTES);
        sourceBytes = new byte[SOURCE_BYTES];
        new Random(42).nextBytes(sourceBytes);
        bytes().write(source, 0, sourceBytes);
        bytes().flush();
    }

    /** Closes what the subclass opened for one test; runs after the contract freed its buffers. */
    protected void closeDevices() {
    }

    @AfterEach
    void tearDown() {
        // Null-safe: a subclass may skip (an assumption) before everything was set up.
        if (transport != null) {
            transport.close();
        }
        if (exporterSide != null) {
            exporterSide.close();
        }
        if (destination != null) {
            importer.free(destination);
        }
        if (source != null) {
            exporter.free(source);
        }
        closeDevices();
    }

    /** An offer of {@code length} bytes at {@code offset} of the source, as the exporter would publish it. */
    private Offer offer(long offset, long length) {
        Endpoint endpoint = exporterSide.advertise(source).orElseThrow(
                () -> new AssertionError(exporterSide.name() + " advertises no endpoint for a buffer of its device"));
        return offerAt(endpoint, offset, length);
    }

    private Offer offerAt(Endpoint endpoint, long offset, long length) {
        return Offer.of(new ChunkKey(17, 71), exporterNodeId(), ProcessIdentity.current(), endpoint, offset, length,
                1, 1, Long.MAX_VALUE);
    }

    @Test
    void theExportersEndpointHasTheTransportsKindAndRoutesTheImporter() {
        Offer o = offer(0, 4096);
        assertEquals(exporterSide.endpointKind(), o.endpoints().get(0).kind());
        assertTrue(transport.route(o).isPresent(), "the importer reaches what the exporter advertised");
        Offer elsewhere = offerAt(new Endpoint(transport.endpointKind() == Endpoint.RDMA ? Endpoint.TCP : Endpoint.RDMA,
                new byte[] {1}), 0, 4096);
        assertTrue(transport.route(elsewhere).isEmpty(), "an offer without this transport's endpoint");
    }

    @Test
    void scatteredSegmentsArriveExactly() {
        Offer o = offer(4096, SOURCE_BYTES - 4096);
        Random rnd = new Random(7);
        CopyBatch.Builder batch = CopyBatch.builder();
        List<long[]> segments = new ArrayList<>();
        for (int i = 0; i < 64; i++) {
            long length = 1 + rnd.nextInt(4096);
            long from = o.offset() + rnd.nextInt((int) (o.length() - length));
            long to = (long) i * 8192;
            batch.add(from, to, length);
            segments.add(new long[] {from, to, length});
        }
        transport.fetch(o, destination, batch.build()).join();
        for (long[] s : segments) {
            byte[] expected = java.util.Arrays.copyOfRange(sourceBytes, (int) s[0], (int) (s[0] + s[2]));
            assertArrayEquals(expected, bytes().read(destination, s[1], (int) s[2]), "segment at " + s[0]);
        }
    }

    @Test
    void concurrentFetchesFromOneSourceAreAllExact() {
        Offer o = offer(0, SOURCE_BYTES);
        List<CompletableFuture<Void>> fetches = new ArrayList<>();
        for (int i = 0; i < 16; i++) {
            long from = (long) i * 65536;
            fetches.add(transport.fetch(o, destination, CopyBatch.builder().add(from, from, 65536).build()));
        }
        fetches.forEach(CompletableFuture::join);
        assertArrayEquals(sourceBytes, bytes().read(destination, 0, SOURCE_BYTES));
    }

    @Test
    void aSpanOutsideTheSourceBufferIsAMalformedOfferMiss() {
        Offer o = offer(SOURCE_BYTES - 4096, 8192);
        CopyBatch batch = CopyBatch.builder().add(SOURCE_BYTES - 4096, 0, 8192).build();
        assertEquals(TransferFailure.MALFORMED, failure(transport.fetch(o, destination, batch)).failure());
    }

    @Test
    void aMalformedEndpointIsAMalformedOfferMiss() {
        Endpoint good = offer(0, 4096).endpoints().get(0);
        // Cut to its first byte: malformed for any transport's format, checksummed or not.
        Offer o = offerAt(new Endpoint(good.kind(), new byte[] {good.bytes()[0]}), 0, 4096);
        CopyBatch batch = CopyBatch.builder().add(0, 0, 4096).build();
        assertEquals(TransferFailure.MALFORMED, failure(transport.fetch(o, destination, batch)).failure());
    }

    @Test
    void freedSourceMemoryIsAPeerGoneMissAndDeliversNothing() {
        Offer o = offer(0, 4096);
        exporter.free(source);
        source = null;
        bytes().write(destination, 0, new byte[4096]);
        CopyBatch batch = CopyBatch.builder().add(0, 0, 4096).build();
        assertEquals(TransferFailure.SOURCE_GONE, failure(transport.fetch(o, destination, batch)).failure());
        assertArrayEquals(new byte[4096], bytes().read(destination, 0, 4096));
    }

    @Test
    void aClosedTransportRefusesToFetch() {
        Offer o = offer(0, 4096);
        transport.close();
        CopyBatch batch = CopyBatch.builder().add(0, 0, 4096).build();
        assertThrows(IllegalStateException.class, () -> transport.fetch(o, destination, batch).join());
    }

    private static TransferException failure(CompletableFuture<Void> fetch) {
        CompletionException e = assertThrows(CompletionException.class, fetch::join);
        return assertInstanceOf(TransferException.class, e.getCause());
    }
}
