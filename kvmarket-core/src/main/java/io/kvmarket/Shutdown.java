package io.kvmarket;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;

/**
 * How a marketplace closes, once: refuse new operations, stop renewing, withdraw every offer at once, then, when
 * no operation runs any more, free the pool and close what the marketplace owns. A second close() waits for the
 * first.
 */
final class Shutdown {

    private static final Logger LOG = LoggerFactory.getLogger(Shutdown.class);
    /** How long close() waits for running exports and loads before the last of them frees the pool instead. */
    static final long WAIT_MS = 10_000;

    private final OperationGate gate;
    private final LeaseKeeper leaseKeeper;
    private final Exporter exporter;
    private final List<AutoCloseable> owned;
    /** Completes when the first close() has withdrawn the offers. */
    private final CompletableFuture<Void> withdrawn = new CompletableFuture<>();
    /** Completes when the first close() has withdrawn everything and released, or handed off, the resources. */
    private final CompletableFuture<Void> closed = new CompletableFuture<>();

    /** @param owned closed, in order, once nothing runs: the pool first, then what the builder opened */
    Shutdown(OperationGate gate, LeaseKeeper leaseKeeper, Exporter exporter, List<AutoCloseable> owned) {
        this.gate = gate;
        this.leaseKeeper = leaseKeeper;
        this.exporter = exporter;
        this.owned = List.copyOf(owned);
    }

    void close() {
        if (!gate.close()) {
            awaitOtherClose();
            return;
        }
        try {
            leaseKeeper.stop();
            try {
                // Nothing is offered from here on: a running export sees the gate closed before it publishes.
                exporter.withdrawAll();
            } finally {
                withdrawn.complete(null);
            }
            if (!gate.releaseWhenIdle(this::release, WAIT_MS)) {
                LOG.info("close: offers withdrawn; the pool is freed when the running loads and exports end");
            }
        } finally {
            closed.complete(null);
        }
    }

    private void awaitOtherClose() {
        withdrawn.join(); // soon: withdrawing waits for no operation
        if (OperationGate.inCompletion()) {
            return; // the first close may be waiting for this very thread
        }
        try {
            closed.get();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } catch (ExecutionException e) {
            throw new IllegalStateException("cannot happen: closed completes normally", e);
        }
    }

    /** Runs once no operation runs, here or in the last operation to end; each failure is logged, the rest run. */
    private void release() {
        leaseKeeper.awaitStopped();
        for (AutoCloseable c : owned) {
            try {
                c.close();
            } catch (Exception e) {
                LOG.warn("closing {} failed: {}", c, e.toString());
            }
        }
    }
}
