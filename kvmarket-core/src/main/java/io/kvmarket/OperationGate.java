package io.kvmarket;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

/**
 * Counts the matches, loads and exports a marketplace has running, so that {@link KvMarketplace#close} can refuse
 * new ones and release what they use (the pool they copy into or read from) only once they have all ended.
 */
final class OperationGate {

    private static final Logger LOG = LoggerFactory.getLogger(OperationGate.class);

    /**
     * Set while a thread completes any marketplace's load future: the engine's callbacks run then, on a device's
     * thread, and neither close() nor export() may wait for work that thread has yet to do.
     */
    private static final ThreadLocal<Boolean> IN_COMPLETION = ThreadLocal.withInitial(() -> false);

    private int running;
    private boolean closed;
    private Runnable onIdle;

    /** @throws IllegalStateException once closing has begun */
    synchronized void enter() {
        if (closed) {
            throw new IllegalStateException("marketplace is closed");
        }
        running++;
    }

    void exit() {
        Runnable release = null;
        synchronized (this) {
            if (--running == 0 && closed) {
                notifyAll();
                release = onIdle;
                onIdle = null;
            }
        }
        if (release != null) {
            runRelease(release);
        }
    }

    /** The release runs in whichever thread ends last; its failure is that thread's to log, not to throw. */
    private static void runRelease(Runnable release) {
        try {
            release.run();
        } catch (RuntimeException e) {
            LOG.warn("releasing a closed marketplace's resources failed: {}", e.toString());
        }
    }

    /**
     * Refuses every operation from now on.
     *
     * @return true when this call closed the gate (false when it was already closed)
     */
    synchronized boolean close() {
        boolean first = !closed;
        closed = true;
        return first;
    }

    synchronized boolean isClosed() {
        return closed;
    }

    /**
     * Runs {@code release} once nothing runs: here, when that happens within {@code waitMs}; otherwise the last
     * operation to end runs it. The caller does not wait when it is completing a load itself (the operations it
     * would wait for may need its thread, a device's completion thread) or when it is interrupted.
     *
     * @return true when {@code release} ran here
     */
    boolean releaseWhenIdle(Runnable release, long waitMs) {
        boolean runHere;
        synchronized (this) {
            long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(waitMs);
            boolean mayWait = !IN_COMPLETION.get() && !Thread.currentThread().isInterrupted();
            while (running > 0 && mayWait) {
                long left = deadline - System.nanoTime();
                if (left <= 0) {
                    break;
                }
                try {
                    TimeUnit.NANOSECONDS.timedWait(this, left);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    mayWait = false;
                }
            }
            runHere = running == 0;
            if (!runHere) {
                onIdle = release;
            }
        }
        if (runHere) {
            runRelease(release);
        }
        return runHere;
    }

    /** True while this thread completes one of the marketplaces' load futures (the engine's callbacks run). */
    static boolean inCompletion() {
        return IN_COMPLETION.get();
    }

    /** Completes a load's future with the flag set that {@link #releaseWhenIdle} reads. */
    static <T> void completeMarked(CompletableFuture<T> future, T value, Throwable error) {
        boolean outer = IN_COMPLETION.get();
        IN_COMPLETION.set(true);
        try {
            if (error != null) {
                future.completeExceptionally(error);
            } else {
                future.complete(value);
            }
        } finally {
            IN_COMPLETION.set(outer);
        }
    }
}
