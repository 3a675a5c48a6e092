package io.kvmarket.transfer.rdma;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;
import io.kvmarket.testkit.DeviceBytes;
import io.kvmarket.transfer.TransferException;
import io.kvmarket.transfer.TransferFailure;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CompletableFuture;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The RDMA transport's own guarantees over the fake provider, in one process: the NIC's key and bounds checks turn
 * a tampered offer into a miss that writes nothing, partial reads keep an exact prefix, channels are reused and set
 * up afresh when the exporter restarts, and closing both sides leaves no verbs object nor thread behind.
 */
@Timeout(120)
class RdmaTransportTest extends RdmaRig {

    static final int CHUNKS = 32;

    Pool pool;
    RdmaTransport exporter;
    RdmaTransport importer;
    byte[] sourceBytes;
    DeviceBuffer destination;

    @BeforeEach
    void setUp() {
        pool = new Pool(exporterDevice, CHUNKS, 11);
        toClose.add(() -> {
            if (!pool.pool.isClosed()) {
                pool.pool.close();
            }
        });
        sourceBytes = pool.bytes;
        destination = importerDevice.allocate(sourceBytes.length);
        exporter = open(exporterDevice, 1, serving());
        importer = open(importerDevice, 2, importing());
    }

    private List<Offer> publishAll(Endpoint endpoint) {
        return pool.offers(endpoint, 3);
    }

    /** Every chunk to the same place, in 16 segments each, so an import has many more reads than queue pairs. */
    private static CopyBatch wholeInBlocks() {
        return inPieces(CHUNKS, 16);
    }

    private Endpoint advertised() {
        return exporter.advertise(pool.pool).orElseThrow();
    }

    private static Endpoint tampered(Endpoint e, int rkeyDelta, long lengthDelta) {
        RdmaEndpoint d = RdmaEndpoint.decode(e);
        return new RdmaEndpoint(d.control(), d.gid(), d.lid(), d.rkey() + rkeyDelta, d.address(),
                d.length() + lengthDelta).encode();
    }

    @Test
    void manyReadsOverSeveralQueuePairsArriveExactlyAndTheChannelIsReused() {
        List<Offer> offers = publishAll(advertised());
        for (int round = 0; round < 3; round++) {
            DeviceBytes.HOST.write(destination, 0, new byte[sourceBytes.length]);
            importer.fetch(offers, destination, wholeInBlocks()).join();
            assertArrayEquals(sourceBytes, DeviceBytes.HOST.read(destination, 0, sourceBytes.length), "round " + round);
        }
        long[] live = Verbs.liveObjects();
        // exporter + importer: one context each, the pool's and the destination's registrations, one channel a side
        assertEquals(liveBefore[0] + 2, live[0], "contexts");
        assertEquals(liveBefore[1] + 2, live[1], "registrations");
        assertEquals(liveBefore[2] + 2, live[2], "channels: three imports reused one");
    }

    @Test
    void aWrongRemoteKeyIsRefusedByTheNicAndWritesNothing() {
        List<Offer> good = publishAll(advertised());
        List<Offer> forged = new ArrayList<>();
        for (Offer o : good) {
            forged.add(Offer.of(o.key(), 1, ProcessIdentity.current(), tampered(advertised(), 1, 0), o.offset(),
                    o.length(), 1, o.generation(), Long.MAX_VALUE));
        }
        TransferException e = failure(importer.fetch(forged, destination, wholeInBlocks()));
        assertEquals(TransferFailure.SOURCE_GONE, e.failure(), e.getMessage());
        assertTrue(e.getMessage().contains("REM_ACCESS_ERR"), e.getMessage());
        assertEquals(0, e.chunksDelivered());
        assertArrayEquals(new byte[sourceBytes.length], DeviceBytes.HOST.read(destination, 0, sourceBytes.length));
        // The failed channel was torn down; the next import sets up a fresh one and is exact.
        importer.fetch(good, destination, wholeInBlocks()).join();
        assertArrayEquals(sourceBytes, DeviceBytes.HOST.read(destination, 0, sourceBytes.length));
    }

    @Test
    void aSpanPastTheRegistrationIsRefusedAndKeepsTheExactPrefixBeforeIt() {
        Endpoint longer = tampered(advertised(), 0, CHUNK);
        List<Offer> offers = new ArrayList<>(publishAll(longer));
        // One chunk past the pool's end, its registration's end: the NIC refuses that read.
        offers.add(Offer.of(new ChunkKey(3, 999), 1, ProcessIdentity.current(), longer, (long) CHUNKS * CHUNK, CHUNK, 1,
                999, Long.MAX_VALUE));
        CopyBatch.Builder b = CopyBatch.builder();
        for (int c = 0; c <= CHUNKS; c++) {
            b.add((long) c * CHUNK, (long) (c % CHUNKS) * CHUNK, c == CHUNKS ? CHUNK / 2 : CHUNK);
        }
        DeviceBuffer big = importerDevice.allocate(sourceBytes.length);
        try {
            TransferException e = failure(importer.fetch(offers, big, b.build()));
            assertEquals(TransferFailure.SOURCE_GONE, e.failure(), e.getMessage());
            assertTrue(e.chunksDelivered() < offers.size(), e.getMessage());
            byte[] landed = DeviceBytes.HOST.read(big, 0, e.chunksDelivered() * CHUNK);
            assertArrayEquals(Arrays.copyOf(sourceBytes, e.chunksDelivered() * CHUNK), landed,
                    "the chunks reported delivered are exact");
        } finally {
            importerDevice.free(big);
        }
    }

    @Test
    void aRestartedExporterIsSetUpAfreshThroughItsNewControlServer() {
        List<Offer> offers = publishAll(advertised());
        importer.fetch(offers, destination, wholeInBlocks()).join();
        exporter.close(); // its control connections end: the importer's idle channel is stale
        exporter = open(exporterDevice, 1, serving());
        List<Offer> again = publishAll(advertised());
        DeviceBytes.HOST.write(destination, 0, new byte[sourceBytes.length]);
        importer.fetch(again, destination, wholeInBlocks()).join();
        assertArrayEquals(sourceBytes, DeviceBytes.HOST.read(destination, 0, sourceBytes.length));
    }

    @Test
    void aClosedPoolIsDeregisteredBeforeItsMemoryIsFreed() {
        List<Offer> offers = publishAll(advertised());
        assertEquals(1, pool.pool.memoryHoldsOpen(), "the registration holds the pool's memory");
        pool.pool.close();
        assertEquals(0, pool.pool.memoryHoldsOpen());
        assertTrue(pool.pool.freed(), "freed once deregistered");
        TransferException e = failure(importer.fetch(offers, destination, wholeInBlocks()));
        assertEquals(TransferFailure.SOURCE_GONE, e.failure(), e.getMessage());
        assertArrayEquals(new byte[sourceBytes.length], DeviceBytes.HOST.read(destination, 0, sourceBytes.length));
    }

    @Test
    void closingBothSidesLeavesNoVerbsObjectNorThread() throws InterruptedException {
        List<Offer> offers = publishAll(advertised());
        List<CompletableFuture<Void>> fetches = new ArrayList<>();
        for (int i = 0; i < 8; i++) {
            fetches.add(importer.fetch(offers, destination, wholeInBlocks()));
        }
        fetches.forEach(CompletableFuture::join);
        importer.close();
        exporter.close();
        assertArrayEquals(liveBefore, Verbs.liveObjects(), "contexts, registrations, channels, queue pairs");
        assertEquals(List.of(), threadsLeft(), "threads of closed transports");
    }
}
