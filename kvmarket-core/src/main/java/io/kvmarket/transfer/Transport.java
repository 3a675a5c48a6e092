package io.kvmarket.transfer;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;

import java.util.List;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;

/**
 * Moves chunks between processes, both sides. An exporter asks each of its transports to {@link #advertise} its
 * pool, and every endpoint they return goes into the pool's offers; an importer asks each of its transports for a
 * {@link #route} to an offer (through the offer's endpoint of the transport's kind), takes the closest, then the
 * cheapest, and {@link #fetch}es with it: one call per source, with every chunk the import takes from it.
 * Tests wrap a transport to inject faults.
 */
public interface Transport extends AutoCloseable {

    String name();

    /** The {@link Endpoint#kind} this transport advertises and reads. */
    int endpointKind();

    /**
     * Exporter side: the endpoint through which this transport reaches {@code pool}, memory of this process's
     * device, from elsewhere; empty when this transport serves no pool (it only imports). A transport that streams
     * the pool's bytes itself serves only chunks the pool {@linkplain ServedPool#hold holds} for it.
     */
    Optional<Endpoint> advertise(ServedPool pool);

    /** Importer side: how this transport would reach the offer's memory, or empty when it cannot. */
    Optional<Route> route(Offer offer);

    /**
     * Copies {@code batch} into {@code dst} as one submission. Its source offsets are relative to the buffer the
     * chunks' endpoints name, fall inside the chunks' spans, and no two segments read the same byte; {@code chunks}
     * are every offer the import takes from that buffer, in import order, all with the same endpoints. Every runtime
     * failure completes the future exceptionally with a {@link TransferException}, which says how many of
     * {@code chunks}, from the first, landed in full before it.
     *
     * @throws IllegalStateException when the transport is closed
     */
    CompletableFuture<Void> fetch(List<Offer> chunks, DeviceBuffer dst, CopyBatch batch);

    /** Drops cached mappings of peers that died or went unused too long; the marketplace calls it periodically. */
    void evictStale();

    @Override
    void close();
}
