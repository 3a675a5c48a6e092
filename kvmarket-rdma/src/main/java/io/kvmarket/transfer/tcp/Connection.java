package io.kvmarket.transfer.tcp;

import javax.crypto.Mac;
import java.io.EOFException;
import java.io.IOException;
import java.net.SocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.util.concurrent.TimeUnit;

/**
 * One blocking socket with a deadline the {@link Watchdog} enforces by closing it: NIO's blocking reads have no
 * timeout of their own. Every read or write that makes progress pushes the deadline out by the I/O timeout, so a
 * slow but moving transfer lives and a stalled one dies.
 */
final class Connection implements AutoCloseable {

    final SocketChannel channel;
    final SocketAddress peer;
    private final long ioTimeoutNanos;
    private volatile long deadlineNanos = Long.MAX_VALUE;
    /** True while the deadline is hard (the handshake's): progress does not push it out. */
    private volatile boolean hard;
    private volatile boolean timedOut;
    /** When the connection was last returned to a client's idle pool (System.nanoTime). */
    volatile long idleSinceNanos;
    /** A client connection's session MAC and the number of its next request; used by one pull at a time. */
    Mac session;
    long nextRequest;

    Connection(SocketChannel channel, SocketAddress peer, long ioTimeoutMillis) {
        this.channel = channel;
        this.peer = peer;
        this.ioTimeoutNanos = TimeUnit.MILLISECONDS.toNanos(ioTimeoutMillis);
    }

    /**
     * Blocking operations from now on must complete by {@code nanos} (System.nanoTime), or the socket closes; no
     * progress pushes it out (the handshake: a peer trickling bytes must not hold the connection).
     */
    void hardDeadline(long nanos) {
        hard = true;
        deadlineNanos = nanos;
    }

    /** The next byte must move by {@code nanos} (System.nanoTime); each byte moved then pushes it out. */
    void deadline(long nanos) {
        hard = false;
        deadlineNanos = nanos;
    }

    /** No deadline: the connection waits idle (a pooled client connection, a server between requests). */
    void noDeadline() {
        hard = false;
        deadlineNanos = Long.MAX_VALUE;
    }

    /** Called by the watchdog: closes the socket once its deadline has passed. */
    void closeIfOverdue(long nowNanos) {
        if (nowNanos - deadlineNanos > 0 && deadlineNanos != Long.MAX_VALUE && channel.isOpen()) {
            timedOut = true;
            close();
        }
    }

    boolean timedOut() {
        return timedOut;
    }

    void readFully(ByteBuffer dst) throws IOException {
        while (dst.hasRemaining()) {
            if (channel.read(dst) < 0) {
                throw new EOFException("connection to " + peer + " closed by the peer");
            }
            progressed();
        }
    }

    void writeFully(ByteBuffer... srcs) throws IOException {
        long left = 0;
        for (ByteBuffer b : srcs) {
            left += b.remaining();
        }
        while (left > 0) {
            left -= channel.write(srcs);
            progressed();
        }
    }

    private void progressed() {
        if (!hard && deadlineNanos != Long.MAX_VALUE) {
            deadlineNanos = System.nanoTime() + ioTimeoutNanos;
        }
    }

    /** Starts a deadline of one I/O timeout from now, pushed out by each byte moved. */
    void armIoDeadline() {
        hard = false;
        deadlineNanos = System.nanoTime() + ioTimeoutNanos;
    }

    @Override
    public void close() {
        try {
            channel.close();
        } catch (IOException ignored) {
            // closing a socket that failed: nothing more to do
        }
    }
}
