package io.kvmarket.transfer;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;

import java.util.Optional;
import java.util.concurrent.CompletableFuture;

/**
 * Moves chunks between processes, both sides. An exporter asks each of its transports to {@link #advertise} its
 * pool, and every endpoint they return goes into the pool's offers; an importer asks each of its transports for a
 * {@link #route} to an offer (through the offer's endpoint of the transport's kind), takes the closest, then the
 * cheapest, and {@link #fetch}es with it: one call per source, whose batch holds every segment read from it.
 * Tests wrap a transport to inject faults.
 */
public interface Transport extends AutoCloseable {

    String name();

    /** The {@link Endpoint#kind} this transport advertises and reads. */
    int endpointKind();

    /**
     * Exporter side: the endpoint through which this transport reaches {@code poolBuffer}, a buffer of this
     * process's device, from elsewhere; empty when this transport serves no pool (it only imports).
     */
    Optional<Endpoint> advertise(DeviceBuffer poolBuffer);

    /** Importer side: how this transport would reach the offer's memory, or empty when it cannot. */
    Optional<Route> route(Offer offer);

    /**
     * Copies {@code batch} (source offsets relative to the buffer the offer's endpoint names; one batch carries
     * every chunk the import takes from that buffer) into {@code dst} as one submission. Every runtime failure
     * completes the future exceptionally with a {@link TransferException}.
     *
     * @throws IllegalStateException when the transport is closed
     */
    CompletableFuture<Void> fetch(Offer source, DeviceBuffer dst, CopyBatch batch);

    /** Drops cached mappings of peers that died or went unused too long; the marketplace calls it periodically. */
    void evictStale();

    @Override
    void close();
}
