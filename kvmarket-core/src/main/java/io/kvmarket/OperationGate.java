package io.kvmarket;

import java.util.concurrent.TimeUnit;

/**
 * Counts the exports and loads a marketplace has running, so that {@link KvMarketplace#close} can refuse new ones
 * and wait for those in flight before it withdraws the offers and frees the pool they write into or read from.
 */
final class OperationGate {

    private int running;
    private boolean closed;

    /** @throws IllegalStateException once closing has begun */
    synchronized void enter() {
        if (closed) {
            throw new IllegalStateException("marketplace is closed");
        }
        running++;
    }

    synchronized void exit() {
        if (--running == 0 && closed) {
            notifyAll();
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

    /** @return true once nothing runs; false when {@code timeoutMs} passed first */
    synchronized boolean awaitIdle(long timeoutMs) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMs);
        while (running > 0) {
            long left = deadline - System.nanoTime();
            if (left <= 0) {
                return false;
            }
            TimeUnit.NANOSECONDS.timedWait(this, left);
        }
        return true;
    }

    synchronized boolean isClosed() {
        return closed;
    }
}
