package io.kvmarket.transfer;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.registry.Offer;

import java.util.concurrent.CompletableFuture;

/**
 * Moves chunks from where an offer says they live into this process's KV cache. One call per source: the
 * batch holds every segment read from that source's buffer. Implementations are picked by locality (same
 * process, same node, other GPU, other node); tests wrap one to inject faults.
 */
public interface Transport extends AutoCloseable {

    String name();

    /** True when this transport can read the memory the offer points at from this process. */
    boolean reaches(Offer offer);

    /**
     * Copies {@code batch} (source offsets relative to the offer's buffer; one batch carries every chunk the import
     * takes from that buffer) into {@code dst} as one submission. Every runtime failure completes the future
     * exceptionally with a {@link TransferException}.
     *
     * @throws IllegalStateException when the transport is closed
     */
    CompletableFuture<Void> fetch(Offer source, DeviceBuffer dst, CopyBatch batch);

    /** Drops cached mappings of peers that died or went unused too long; the marketplace calls it periodically. */
    void evictStale();

    @Override
    void close();
}
