package io.kvmarket.transfer.tcp;

import io.kvmarket.device.Device;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.net.StandardSocketOptions;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.util.concurrent.TimeUnit;

/**
 * Small authenticated requests between cluster members over the TCP transport's protocol ({@link Wire}): how another
 * transport sets itself up between two nodes (the RDMA transport exchanges queue pair numbers, GIDs and PSNs this
 * way). Both sides prove they hold the cluster secret before anything is answered, and every request and answer
 * carries a MAC under the connection's session key. What a request sets up on the server may live as long as its
 * {@linkplain Session session}: the server runs the session's {@link Session#onEnd} actions when the connection ends
 * (the peer closed it, died, or went idle past the idle timeout).
 */
public final class ControlChannel {

    /** Largest request or answer body. */
    public static final int MAX_BYTES = Wire.MAX_CONTROL_BYTES;

    private ControlChannel() {
    }

    /** Answers control requests of authenticated members; called on the connection's own thread. */
    public interface Handler {
        /**
         * @return the answer, at most {@link #MAX_BYTES} bytes
         * @throws IOException for a request it cannot answer (malformed, refused): the connection closes
         */
        byte[] answer(Session session, byte[] request) throws IOException;
    }

    /** One member's connection, as a handler sees it. */
    public interface Session {
        SocketAddress peer();

        /** Runs {@code action} when the connection ends; at once when it has ended already. */
        void onEnd(Runnable action);
    }

    /**
     * Starts serving control requests on {@code config}'s bind address: no pool is served on it.
     *
     * @throws IOException when the address cannot be bound
     */
    public static Server serve(TcpConfig config, Device device, Handler handler) throws IOException {
        Watchdog watchdog = new Watchdog("kvmarket-control-watchdog");
        try {
            return new Server(TcpServer.start(device, null, config, watchdog, handler), watchdog);
        } catch (IOException | RuntimeException e) {
            watchdog.close();
            throw e;
        }
    }

    /** Opens clients to members' control servers; its one watchdog thread guards all their deadlines. */
    public static Connector connector(TcpConfig config) {
        return new Connector(config);
    }

    /** Connects clients; closing it closes the watchdog, so close it after its clients. */
    public static final class Connector implements AutoCloseable {
        private final TcpConfig config;
        private final Watchdog watchdog = new Watchdog("kvmarket-control-client-watchdog");

        private Connector(TcpConfig config) {
            this.config = config;
        }

        /**
         * Connects to a member's control server and proves membership both ways, within the connect timeout.
         *
         * @throws IOException when it cannot connect, or either side does not hold the cluster secret
         */
        public Client connect(InetSocketAddress address) throws IOException {
            SocketChannel ch = SocketChannel.open();
            Connection c = new Connection(ch, address, config.ioTimeoutMillis());
            watchdog.watch(c);
            try {
                c.hardDeadline(System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(config.connectTimeoutMillis()));
                ch.connect(address);
                ch.setOption(StandardSocketOptions.TCP_NODELAY, true);
                c.session = Wire.sessionMac(Wire.clientHandshake(c, config.secret()));
                c.noDeadline();
                return new Client(c, watchdog);
            } catch (IOException | RuntimeException e) {
                c.close();
                watchdog.forget(c);
                if (c.timedOut()) {
                    throw new IOException("no answer from " + address + " within " + config.connectTimeoutMillis()
                            + " ms", e);
                }
                throw e;
            }
        }

        @Override
        public void close() {
            watchdog.close();
        }
    }

    /** A control server; closing it ends every session. */
    public static final class Server implements AutoCloseable {
        private final TcpServer server;
        private final Watchdog watchdog;

        private Server(TcpServer server, Watchdog watchdog) {
            this.server = server;
            this.watchdog = watchdog;
        }

        /** Where members reach it. */
        public InetSocketAddress advertised() {
            return server.advertised();
        }

        /** Connections open now, sessions or not. */
        public int openConnections() {
            return server.openConnections();
        }

        /**
         * Stops serving and waits up to 5 s for the connection threads (whose sessions end as they go).
         *
         * @return true when every connection thread ended
         */
        public boolean stop() {
            boolean stopped = server.stop();
            watchdog.close();
            return stopped;
        }

        @Override
        public void close() {
            stop();
        }
    }

    /** One authenticated connection to a member's control server; one request at a time. */
    public static final class Client implements AutoCloseable {
        private final Connection c;
        private final Watchdog watchdog;
        private long lastUsedNanos = System.nanoTime();

        private Client(Connection c, Watchdog watchdog) {
            this.c = c;
            this.watchdog = watchdog;
        }

        /**
         * Sends one request and waits for its answer, each byte within the I/O timeout.
         *
         * @throws IOException when the connection breaks, times out, or the answer fails its MAC; the client is then
         *                     closed
         */
        public synchronized byte[] call(byte[] request) throws IOException {
            if (request.length > MAX_BYTES) {
                throw new IllegalArgumentException("control request of " + request.length + " bytes exceeds "
                        + MAX_BYTES);
            }
            long n = c.nextRequest++;
            try {
                c.armIoDeadline();
                ByteBuffer header = ByteBuffer.allocate(Wire.REQUEST_HEADER_BYTES);
                header.putInt(Wire.CONTROL).putInt(0).putLong(0).putInt(request.length);
                c.session.update(ByteBuffer.allocate(8).putLong(0, n).array());
                c.session.update(header.array());
                c.session.update(request);
                byte[] mac = c.session.doFinal();
                c.writeFully(header.flip(), ByteBuffer.wrap(request), ByteBuffer.wrap(mac));
                ByteBuffer length = ByteBuffer.allocate(4);
                c.readFully(length);
                int a = length.getInt(0);
                if (a < 0 || a > MAX_BYTES) {
                    throw new IOException("control answer of " + a + " bytes from " + c.peer);
                }
                ByteBuffer rest = ByteBuffer.allocate(4 + a);
                rest.putInt(a);
                c.readFully(rest);
                ByteBuffer tag = ByteBuffer.allocate(Wire.MAC_BYTES);
                c.readFully(tag);
                byte[] body = Wire.controlAnswerBody(c.session, n, rest.array(), tag.array());
                c.noDeadline();
                lastUsedNanos = System.nanoTime();
                return body;
            } catch (IOException | RuntimeException e) {
                close();
                if (c.timedOut()) {
                    throw new IOException("control request to " + c.peer + " got no answer in time", e);
                }
                throw e;
            }
        }

        /**
         * True when the server has closed the connection (or it is closed here): what it set up for this client is
         * gone. Does not block.
         */
        public synchronized boolean isClosed() {
            if (!c.channel.isOpen()) {
                return true;
            }
            try {
                c.channel.configureBlocking(false);
                try {
                    int read = c.channel.read(ByteBuffer.allocate(1));
                    if (read != 0) { // end of stream, or a byte no request asked for: either way out of step
                        close();
                        return true;
                    }
                } finally {
                    c.channel.configureBlocking(true);
                }
                return false;
            } catch (IOException e) {
                close();
                return true;
            }
        }

        /** Nanoseconds since the last answer (or the handshake). */
        public synchronized long idleNanos() {
            return System.nanoTime() - lastUsedNanos;
        }

        public SocketAddress peer() {
            return c.peer;
        }

        @Override
        public void close() {
            c.close();
            watchdog.forget(c);
        }
    }

}
