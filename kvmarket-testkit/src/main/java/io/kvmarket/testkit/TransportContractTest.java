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
import java.util.Arrays;
import java.util.Collections;
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
 * its pool; through it, the importer's transport routes to offers of that pool and moves exactly the bytes of every
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
    /** The exporter's pool as its transport sees it: the test publishes what each case fetches. */
    protected PublishedChunks pool;
    private long nextKey = 1;

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
        pool = new PublishedChunks(exporter, source);
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
        if (pool != null && !pool.isClosed()) {
            pool.close();
        }
        closeDevices();
    }

    /** A chunk of {@code length} bytes at {@code offset} of the pool, published and offered as an exporter would. */
    protected Offer offer(long offset, long length) {
        Endpoint endpoint = exporterSide.advertise(pool).orElseThrow(
                () -> new AssertionError(exporterSide.name() + " advertises no endpoint for a pool of its device"));
        Offer o = offerAt(endpoint, offset, length);
        pool.publish(o.key(), o.generation(), offset, length);
        return o;
    }

    private Offer offerAt(Endpoint endpoint, long offset, long length) {
        long k = nextKey++;
        return Offer.of(new ChunkKey(17, k), exporterNodeId(), ProcessIdentity.current(), endpoint, offset, length,
                1, 1000 + k, Long.MAX_VALUE);
    }

    protected Transport importerSide() {
        return transport;
    }

    protected DeviceBuffer destination() {
        return destination;
    }

    protected byte[] sourceBytes(long offset, long length) {
        return Arrays.copyOfRange(sourceBytes, (int) offset, (int) (offset + length));
    }

    protected byte[] destinationBytes(long offset, long length) {
        return bytes().read(destination, offset, (int) length);
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

    /** Disjoint spans of the chunk, in random order and sizes, each to its own place: as an import scatters blocks. */
    @Test
    void scatteredSegmentsArriveExactly() {
        Offer o = offer(4096, SOURCE_BYTES - 4096);
        Random rnd = new Random(7);
        List<long[]> segments = new ArrayList<>();
        long from = o.offset();
        for (int i = 0; i < 64 && from < o.offset() + o.length(); i++) {
            long length = Math.min(1 + rnd.nextInt(4096), o.offset() + o.length() - from);
            segments.add(new long[] {from, (long) i * 8192, length});
            from += length + rnd.nextInt(4096);
        }
        Collections.shuffle(segments, rnd);
        CopyBatch.Builder batch = CopyBatch.builder();
        segments.forEach(s -> batch.add(s[0], s[1], s[2]));
        transport.fetch(List.of(o), destination, batch.build()).join();
        for (long[] s : segments) {
            assertArrayEquals(sourceBytes(s[0], s[2]), destinationBytes(s[1], s[2]), "segment at " + s[0]);
        }
    }

    /** Several chunks of one source in one fetch, listed out of memory order, each split as blocks are. */
    @Test
    void theChunksOfOneFetchArriveExactlyWhateverTheirOrderInMemory() {
        int chunk = 65536;
        List<Offer> chunks = List.of(offer(5L * chunk, chunk), offer(2L * chunk, chunk), offer(9L * chunk, chunk));
        CopyBatch.Builder batch = CopyBatch.builder();
        for (int c = 0; c < chunks.size(); c++) {
            for (int half = 0; half < 2; half++) { // the second half lands before the first
                batch.add(chunks.get(c).offset() + (1 - half) * (chunk / 2L), (c * 2L + half) * chunk / 2, chunk / 2);
            }
        }
        transport.fetch(chunks, destination, batch.build()).join();
        for (int c = 0; c < chunks.size(); c++) {
            Offer o = chunks.get(c);
            assertArrayEquals(sourceBytes(o.offset() + chunk / 2, chunk / 2), destinationBytes(c * 2L * chunk / 2, chunk / 2));
            assertArrayEquals(sourceBytes(o.offset(), chunk / 2), destinationBytes((c * 2L + 1) * chunk / 2, chunk / 2));
        }
    }

    @Test
    void concurrentFetchesFromOneSourceAreAllExact() {
        List<CompletableFuture<Void>> fetches = new ArrayList<>();
        for (int i = 0; i < 16; i++) {
            long from = (long) i * 65536;
            Offer o = offer(from, 65536);
            fetches.add(transport.fetch(List.of(o), destination, CopyBatch.builder().add(from, from, 65536).build()));
        }
        fetches.forEach(CompletableFuture::join);
        assertArrayEquals(sourceBytes, bytes().read(destination, 0, SOURCE_BYTES));
    }

    @Test
    void aSpanOutsideTheSourceBufferIsAMalformedOfferMiss() {
        Offer o = offer(SOURCE_BYTES - 4096, 8192);
        CopyBatch batch = CopyBatch.builder().add(SOURCE_BYTES - 4096, 0, 8192).build();
        assertEquals(TransferFailure.MALFORMED, failure(transport.fetch(List.of(o), destination, batch)).failure());
    }

    @Test
    void aMalformedEndpointIsAMalformedOfferMiss() {
        Endpoint good = offer(0, 4096).endpoints().get(0);
        // Cut to its first byte: malformed for any transport's format, checksummed or not.
        Offer o = offerAt(new Endpoint(good.kind(), new byte[] {good.bytes()[0]}), 0, 4096);
        CopyBatch batch = CopyBatch.builder().add(0, 0, 4096).build();
        assertEquals(TransferFailure.MALFORMED, failure(transport.fetch(List.of(o), destination, batch)).failure());
    }

    @Test
    void aClosedPoolIsAPeerGoneMissAndDeliversNothing() {
        Offer o = offer(0, 4096);
        pool.close();
        bytes().write(destination, 0, new byte[4096]);
        CopyBatch batch = CopyBatch.builder().add(0, 0, 4096).build();
        assertEquals(TransferFailure.SOURCE_GONE, failure(transport.fetch(List.of(o), destination, batch)).failure());
        assertArrayEquals(new byte[4096], bytes().read(destination, 0, 4096));
    }

    @Test
    void aClosedTransportRefusesToFetch() {
        Offer o = offer(0, 4096);
        transport.close();
        CopyBatch batch = CopyBatch.builder().add(0, 0, 4096).build();
        assertThrows(IllegalStateException.class, () -> transport.fetch(List.of(o), destination, batch).join());
    }

    protected static TransferException failure(CompletableFuture<Void> fetch) {
        CompletionException e = assertThrows(CompletionException.class, fetch::join);
        return assertInstanceOf(TransferException.class, e.getCause());
    }
}
