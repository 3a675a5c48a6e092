package io.kvmarket.transfer.rdma;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;
import io.kvmarket.testkit.DeviceBytes;
import io.kvmarket.transfer.TransferException;
import io.kvmarket.transfer.TransferFailure;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Attacks on the shape of imports and configurations: tiny and huge queue settings, imports far larger than one
 * window, segments spanning chunks, mixed sources, bad plans.
 */
@Timeout(180)
class RdmaQueueShapesTest extends RdmaRig {

    void roundTrip(RdmaConfig importerConfig, int chunks, CopyBatch batch) {
        RdmaTransport exporter = open(exporterDevice, 1, serving());
        RdmaTransport importer = open(importerDevice, 2, importerConfig);
        Pool pool = new Pool(exporterDevice, chunks, chunks * 31L + batch.segments());
        List<Offer> offers = pool.offers(exporter.advertise(pool.pool).orElseThrow(), 1);
        DeviceBuffer dst = importerDevice.allocate(pool.bytes.length);
        for (int round = 0; round < 2; round++) {
            DeviceBytes.HOST.write(dst, 0, new byte[pool.bytes.length]);
            importer.fetch(offers, dst, batch).join();
            assertArrayEquals(pool.bytes, DeviceBytes.HOST.read(dst, 0, pool.bytes.length), "round " + round);
        }
        importer.close();
        exporter.close();
        pool.pool.close();
        assertArrayEquals(liveBefore, Verbs.liveObjects());
    }

    @Test
    void oneQueuePairOfDepthOneCarriesAThousandSegments() {
        roundTrip(config(control(false), 1, 1, 8, 4, 60_000), 16, inPieces(16, 64));
    }

    @Test
    void sixtyFourQueuePairsOfDepthOneCarryManyWindows() {
        roundTrip(config(control(false), 64, 1, 8, 4, 60_000), 16, inPieces(16, 64));
    }

    @Test
    void sixtyFourQueuePairsWithFewerSegmentsThanQueuePairs() {
        roundTrip(config(control(false), 64, 4096, 8, 4, 60_000), 3, inPieces(3, 1));
    }

    @Test
    void windowsThatDoNotDivideTheSegmentsEvenly() {
        roundTrip(config(control(false), 3, 7, 8, 4, 60_000), 17, inPieces(17, 16)); // 272 over windows of 21
    }

    @Test
    void segmentsSpanningSeveralChunksWithWindowing() {
        // 4 chunks per segment (adjacent chunks, contiguous in both buffers), plus a few single-chunk pieces.
        CopyBatch.Builder b = CopyBatch.builder();
        for (int g = 7; g >= 0; g--) { // back to front so that groups do not merge
            b.add((long) g * 4 * CHUNK, (long) g * 4 * CHUNK, 4L * CHUNK);
        }
        roundTrip(config(control(false), 2, 1, 8, 4, 60_000), 32, b.build());
    }

    @Test
    void aSendQueueDepthTheDeviceCannotHaveIsRefusedUpFrontNotOnEveryFetch() {
        // The fake (like a real device) supports 16,384 WRs per QP; RdmaConfig accepts any positive depth.
        RdmaConfig tooDeep = config(control(false), 4, 1 << 20, 8, 4, 10_000);
        RdmaTransport importer;
        try {
            importer = open(importerDevice, 2, tooDeep);
        } catch (IllegalArgumentException | VerbsException refusedUpFront) {
            return; // refused when opened: good
        }
        RdmaTransport exporter = open(exporterDevice, 1, serving());
        Pool pool = new Pool(exporterDevice, 2, 3);
        List<Offer> offers = pool.offers(exporter.advertise(pool.pool).orElseThrow(), 1);
        DeviceBuffer dst = importerDevice.allocate(pool.bytes.length);
        CompletableFuture<Void> f = importer.fetch(offers, dst, inPieces(2, 2));
        try {
            f.join();
        } catch (CompletionException e) {
            TransferException te = (TransferException) e.getCause();
            throw new AssertionError("a configuration the device cannot do was accepted by open() and fails every "
                    + "fetch at run time: " + te.failure() + " " + te.getMessage(), te);
        }
    }

    /**
     * The SPI says every chunk of a fetch has the same endpoints (the Importer groups so). A caller that breaks that
     * gets the second pool's chunk read out of the first pool, reported as a success.
     */
    @Test
    void chunksOfTwoPoolsInOneFetchAreNotSilentlyReadFromTheFirstPool() {
        RdmaTransport exporter = open(exporterDevice, 1, serving());
        RdmaTransport importer = open(importerDevice, 2, importing());
        Pool a = new Pool(exporterDevice, 2, 1);
        Pool b = new Pool(exporterDevice, 2, 2);
        Endpoint ea = exporter.advertise(a.pool).orElseThrow();
        Endpoint eb = exporter.advertise(b.pool).orElseThrow();
        Offer fromA = a.offers(ea, 1).get(0);
        Offer fromB = b.offers(eb, 2).get(1);  // chunk 1 of pool b, at offset CHUNK of b
        CopyBatch batch = CopyBatch.builder().add(0, 0, CHUNK).add(CHUNK, CHUNK, CHUNK).build();
        DeviceBuffer dst = importerDevice.allocate(2 * CHUNK);
        CompletableFuture<Void> f;
        try {
            f = importer.fetch(List.of(fromA, fromB), dst, batch);
        } catch (IllegalArgumentException refused) {
            return; // the precondition checked: good
        }
        try {
            f.join();
        } catch (CompletionException failedIsFine) {
            return;
        }
        byte[] second = DeviceBytes.HOST.read(dst, CHUNK, CHUNK);
        byte[] wantB = Arrays.copyOfRange(b.bytes, CHUNK, 2 * CHUNK);
        byte[] fromPoolA = Arrays.copyOfRange(a.bytes, CHUNK, 2 * CHUNK);
        assertFalse(Arrays.equals(fromPoolA, second), "pool b's chunk was delivered with pool a's bytes");
        assertArrayEquals(wantB, second);
    }

    @Test
    void badPlansAreProgrammingErrorsThrownSynchronously() {
        RdmaTransport exporter = open(exporterDevice, 1, serving());
        RdmaTransport importer = open(importerDevice, 2, importing());
        Pool pool = new Pool(exporterDevice, 4, 4);
        List<Offer> offers = pool.offers(exporter.advertise(pool.pool).orElseThrow(), 1);
        DeviceBuffer dst = importerDevice.allocate(4 * CHUNK);
        assertThrows(IllegalArgumentException.class, () -> importer.fetch(List.of(), dst, inPieces(1, 1)));
        // past the destination's end
        assertThrows(IllegalArgumentException.class, () -> importer.fetch(offers, dst,
                CopyBatch.builder().add(0, 4L * CHUNK - 8, 16).build()));
        // a source byte outside every chunk fetched
        assertThrows(IllegalArgumentException.class, () -> importer.fetch(offers.subList(0, 1), dst,
                CopyBatch.builder().add(CHUNK, 0, 16).build()));
        // a segment across a gap between two chunks that are not adjacent
        assertThrows(IllegalArgumentException.class, () -> importer.fetch(List.of(offers.get(0), offers.get(2)), dst,
                CopyBatch.builder().add(CHUNK - 8, 0, 16).build()));
        // offers whose endpoint claims a pool smaller than the chunk: MALFORMED, nothing read
        importer.close();
        assertThrows(IllegalStateException.class, () -> importer.fetch(offers, dst, inPieces(4, 1)));
    }

    @Test
    void aDeadlineOfOneMillisecondFailsCleanlyWithAnExactPrefix() {
        RdmaTransport exporter = open(exporterDevice, 1, serving());
        RdmaTransport importer = open(importerDevice, 2, config(control(false), 2, 2, 8, 4, 1));
        Pool pool = new Pool(exporterDevice, 64, 8);
        List<Offer> offers = pool.offers(exporter.advertise(pool.pool).orElseThrow(), 1);
        DeviceBuffer dst = importerDevice.allocate(pool.bytes.length);
        for (int i = 0; i < 10; i++) {
            CompletableFuture<Void> f = importer.fetch(offers, dst, inPieces(64, 16));
            try {
                f.join();
            } catch (CompletionException e) {
                TransferException te = (TransferException) e.getCause();
                assertTrue(te.failure() == TransferFailure.FAILED || te.failure() == TransferFailure.UNREACHABLE,
                        te.failure() + " " + te.getMessage());
                int d = te.chunksDelivered();
                assertArrayEquals(Arrays.copyOf(pool.bytes, d * CHUNK), DeviceBytes.HOST.read(dst, 0, d * CHUNK));
            }
        }
        importer.close();
        exporter.close();
        pool.pool.close();
        assertArrayEquals(liveBefore, Verbs.liveObjects());
    }

    @Test
    void aForgedEndpointNamingAnotherPoolsKeyReadsNothingOutsideTheAdvertisedRegistration() {
        RdmaTransport exporter = open(exporterDevice, 1, serving());
        RdmaTransport importer = open(importerDevice, 2, importing());
        Pool pool = new Pool(exporterDevice, 2, 12);
        Endpoint real = exporter.advertise(pool.pool).orElseThrow();
        RdmaEndpoint d = RdmaEndpoint.decode(real);
        // Same key, address moved back by a page and a length grown to cover it: the NIC must refuse.
        Endpoint forged = new RdmaEndpoint(d.control(), d.gid(), d.lid(), d.rkey(), d.address() - 4096,
                d.length() + 4096).encode();
        List<Offer> offers = new ArrayList<>();
        offers.add(Offer.of(new io.kvmarket.key.ChunkKey(1, 1), 1, io.kvmarket.node.ProcessIdentity.current(), forged,
                0, CHUNK, 1, 1, Long.MAX_VALUE));
        DeviceBuffer dst = importerDevice.allocate(CHUNK);
        TransferException te = failure(importer.fetch(offers, dst, CopyBatch.builder().add(0, 0, CHUNK).build()));
        assertEquals(TransferFailure.SOURCE_GONE, te.failure(), te.getMessage());
        assertEquals(0, te.chunksDelivered());
    }
}
