package io.kvmarket.transfer.tcp;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.device.Device;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.transfer.ServedPool;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import javax.crypto.Mac;

import java.io.IOException;
import java.net.Inet4Address;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.NetworkInterface;
import java.net.SocketException;
import java.net.StandardSocketOptions;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.security.MessageDigest;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashMap;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.SynchronousQueue;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The serving side: one acceptor thread and one thread per connection, at most {@link TcpConfig#maxConnections}
 * connections. A connection is served only after its peer proves it holds the cluster secret; it then streams chunks
 * of the pools this process advertised, each only while the pool holds it as requested. Memory per connection is one
 * request (at most {@link #MAX_CHUNKS} entries); pool bytes go from the pool's memory to the socket without a copy.
 *
 * <p>Neither idle members nor strangers can lock members out. Under the limit every connection is admitted. At the
 * limit, a new connection takes the place of the member connection idle longest (its client reconnects when it next
 * pulls) while fewer than half are still proving membership; past that, or with no member idle, a connection still
 * proving membership makes room ({@link #evictProver}): one of the address with the most such connections, then one
 * from an address no member ever proved from, oldest first. So a flood from one address drops its own connections,
 * and a flood from many drops its own before the handshakes of members from addresses seen before; a stranger
 * flooding from many addresses can still cut a slow handshake from an address never seen before. Only when every
 * connection is mid-transfer is a new one refused.
 */
final class TcpServer implements AutoCloseable {

    /** Addresses remembered as members': a cluster's nodes, many times over. */
    private static final int MEMBER_ADDRESSES = 4096;
    /** Chunks one request may name: a 256K-token prompt in chunks of 16; a client splits longer pulls. */
    static final int MAX_CHUNKS = 16_384;

    private static final Logger LOG = LoggerFactory.getLogger(TcpServer.class);
    private static final long WARN_EVERY_NANOS = TimeUnit.SECONDS.toNanos(10);
    private static final AtomicInteger SERVERS = new AtomicInteger();
    private static final SecureRandom RANDOM = new SecureRandom();

    private final Device device;
    /** Answers control requests (another transport's setup between members); null when this server takes none. */
    private final ControlChannel.Handler control;
    /** Staging for a device whose memory the JVM cannot address; null when it can. */
    private final StagingRing ring;
    private final TcpConfig config;
    private final Watchdog watchdog;
    private final ServerSocketChannel listener;
    private final InetSocketAddress advertised;
    private final Map<Long, ServedPool> pools = new ConcurrentHashMap<>();
    private final Set<Connection> open = ConcurrentHashMap.newKeySet();
    /** Guarded by this: connections in the handshake, oldest first; members waiting for a request, idle longest first. */
    private final Set<Connection> proving = new LinkedHashSet<>();
    private final Set<Connection> waiting = new LinkedHashSet<>();
    /** Guarded by this: addresses members proved membership from, the least recently proven forgotten first. */
    private final Set<InetAddress> members = Collections.newSetFromMap(new LinkedHashMap<>(16, 0.75f, true) {
        @Override
        protected boolean removeEldestEntry(Map.Entry<InetAddress, Boolean> eldest) {
            return size() > MEMBER_ADDRESSES;
        }
    });
    private final ThreadPoolExecutor workers;
    private final Thread acceptor;
    private final AtomicLong lastWarnNanos = new AtomicLong(System.nanoTime() - WARN_EVERY_NANOS);
    private final AtomicLong refused = new AtomicLong();
    private volatile boolean closed;

    private TcpServer(Device device, StagingRing ring, TcpConfig config, Watchdog watchdog,
                      ServerSocketChannel listener, InetSocketAddress advertised, ControlChannel.Handler control) {
        this.device = device;
        this.control = control;
        this.ring = ring;
        this.config = config;
        this.watchdog = watchdog;
        this.listener = listener;
        this.advertised = advertised;
        int id = SERVERS.incrementAndGet();
        String prefix = control == null ? "kvmarket-tcp-" : "kvmarket-control-";
        AtomicInteger threads = new AtomicInteger();
        // Admission bounds connections; threads may outnumber them while dropped connections' threads unwind.
        this.workers = new ThreadPoolExecutor(0, 2 * config.maxConnections(), 30, TimeUnit.SECONDS,
                new SynchronousQueue<>(), r -> daemon(r, prefix + "serve-" + id + "-" + threads.incrementAndGet()));
        this.acceptor = daemon(this::acceptLoop, prefix + "accept-" + id);
    }

    /**
     * Binds and starts serving.
     *
     * @throws IOException when the address cannot be bound (in use, not local)
     */
    static TcpServer start(Device device, StagingRing ring, TcpConfig config, Watchdog watchdog) throws IOException {
        return start(device, ring, config, watchdog, null);
    }

    /** Binds and starts serving, answering control requests through {@code control} when it is not null. */
    static TcpServer start(Device device, StagingRing ring, TcpConfig config, Watchdog watchdog,
                           ControlChannel.Handler control) throws IOException {
        ServerSocketChannel listener = ServerSocketChannel.open();
        try {
            listener.setOption(StandardSocketOptions.SO_REUSEADDR, true);
            listener.bind(config.bind(), 128);
            InetSocketAddress bound = (InetSocketAddress) listener.getLocalAddress();
            InetSocketAddress advertised = new InetSocketAddress(advertisedAddress(config, bound), bound.getPort());
            TcpServer server = new TcpServer(device, ring, config, watchdog, listener, advertised, control);
            server.acceptor.start();
            LOG.info("{} serving cluster members on {} (advertised as {})",
                    control == null ? "TCP transport" : "Control channel", bound, advertised);
            return server;
        } catch (IOException | RuntimeException e) {
            listener.close();
            throw e;
        }
    }

    InetSocketAddress advertised() {
        return advertised;
    }

    /** Serves {@code pool} from now on, under a fresh id no peer can have seen before. */
    long serve(ServedPool pool) {
        while (true) {
            long id = RANDOM.nextLong();
            if (pools.putIfAbsent(id, pool) == null) {
                return id;
            }
        }
    }

    /** Forgets pools that closed: they publish nothing any more. */
    void forgetClosedPools() {
        pools.values().removeIf(ServedPool::isClosed);
    }

    int servedPools() {
        return pools.size();
    }

    int openConnections() {
        return open.size();
    }

    private void acceptLoop() {
        while (!closed) {
            SocketChannel ch;
            try {
                ch = listener.accept();
            } catch (IOException e) {
                if (closed || !listener.isOpen()) {
                    return;
                }
                // Out of file descriptors, say: passing, and serving must outlive it.
                warnRateLimited("accepting failed: " + e + "; retrying in 50 ms");
                pause(50);
                continue;
            }
            Connection c;
            try {
                ch.setOption(StandardSocketOptions.TCP_NODELAY, true);
                c = new Connection(ch, ch.getRemoteAddress(), config.ioTimeoutMillis());
            } catch (IOException e) {
                closeQuietly(ch);
                continue;
            }
            if (!admit(c)) {
                warnRateLimited("refused a connection from " + c.peer + ": all " + config.maxConnections()
                        + " connections are mid-transfer");
                c.close();
                continue;
            }
            watchdog.watch(c);
            try {
                workers.execute(() -> handle(c));
            } catch (RejectedExecutionException e) { // closed, or dropped connections' threads still unwinding
                drop(c);
            }
            if (closed) { // close() ran after this connection was accepted: it must not outlive it
                drop(c);
            }
        }
    }

    /** Makes room for {@code c} as the class comment says, or refuses it; records it as proving membership. */
    private synchronized boolean admit(Connection c) {
        if (open.size() >= config.maxConnections()) {
            boolean provingHalf = proving.size() >= Math.max(1, config.maxConnections() / 2);
            if ((provingHalf || !evict(waiting)) && !evictProver(c)) {
                return false;
            }
        }
        proving.add(c);
        open.add(c);
        return true;
    }

    /**
     * Makes room for {@code c} by dropping a connection still proving membership: one from the address with the most
     * of them ({@code c} counted), so a flood from one address drops its own; among addresses as busy, one no member
     * ever proved from before one members proved from (members reconnect from the addresses they proved from, and a
     * stranger cannot open TCP connections from an address it does not hold); then the oldest. False when none is
     * proving.
     */
    private boolean evictProver(Connection c) {
        Map<InetAddress, Integer> perHost = new HashMap<>();
        perHost.merge(host(c), 1, Integer::sum);
        proving.forEach(p -> perHost.merge(host(p), 1, Integer::sum));
        Connection victim = null;
        for (Connection p : proving) {
            if (victim == null || before(p, victim, perHost)) {
                victim = p;
            }
        }
        if (victim == null) {
            return false;
        }
        proving.remove(victim);
        LOG.debug("dropped the connection of {}, still proving membership, to make room", victim.peer);
        drop(victim);
        return true;
    }

    /** Whether {@code p} goes before {@code q}, which is older: the busier address, then one no member proved from. */
    private boolean before(Connection p, Connection q, Map<InetAddress, Integer> perHost) {
        int busier = Integer.compare(perHost.get(host(p)), perHost.get(host(q)));
        return busier != 0 ? busier > 0 : members.contains(host(q)) && !members.contains(host(p));
    }

    private static InetAddress host(Connection c) {
        return c.peer instanceof InetSocketAddress a ? a.getAddress() : null;
    }

    /** Drops the first of {@code ones} (the oldest), if any. */
    private boolean evict(Set<Connection> ones) {
        Iterator<Connection> it = ones.iterator();
        if (!it.hasNext()) {
            return false;
        }
        Connection victim = it.next();
        it.remove();
        LOG.debug("dropped the connection of {} to make room", victim.peer);
        drop(victim);
        return true;
    }

    private synchronized void proven(Connection c) {
        proving.remove(c);
        members.add(host(c));
    }

    private synchronized void waitingForRequest(Connection c, boolean waits) {
        if (waits) {
            waiting.add(c);
        } else {
            waiting.remove(c);
        }
    }

    private void handle(Connection c) {
        Session session = null;
        try {
            c.hardDeadline(System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(config.connectTimeoutMillis()));
            Mac mac = Wire.sessionMac(Wire.serverHandshake(c, config.secret()));
            proven(c);
            ByteBuffer header = ByteBuffer.allocate(Wire.REQUEST_HEADER_BYTES);
            ByteBuffer status = ByteBuffer.allocateDirect(1);
            ByteBuffer seq = ByteBuffer.allocate(8);
            byte[] tag = new byte[Wire.MAC_BYTES];
            for (long n = 0; !closed; n++) {
                c.deadline(System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(config.idleTimeoutMillis()));
                header.clear();
                waitingForRequest(c, true);
                c.readFully(header);
                waitingForRequest(c, false);
                c.armIoDeadline();
                header.flip();
                int magic = header.getInt();
                int flags = header.getInt();
                long poolId = header.getLong();
                int count = header.getInt();
                if (magic == Wire.CONTROL && control != null && count >= 0 && count <= Wire.MAX_CONTROL_BYTES) {
                    if (session == null) {
                        session = new Session(c);
                    }
                    answerControl(c, session, header, count, mac, n);
                    continue;
                }
                if (magic != Wire.REQUEST || count < 1 || count > MAX_CHUNKS) {
                    warnRateLimited("closed the connection of " + c.peer + ": malformed request (magic "
                            + Integer.toHexString(magic) + ", " + count + " chunks)");
                    return;
                }
                ByteBuffer entries = ByteBuffer.allocate(count * Wire.CHUNK_ENTRY_BYTES + Wire.MAC_BYTES);
                c.readFully(entries);
                mac.update(seq.clear().putLong(0, n));
                mac.update(header.array());
                mac.update(entries.array(), 0, count * Wire.CHUNK_ENTRY_BYTES);
                if (!MessageDigest.isEqual(mac.doFinal(), Arrays.copyOfRange(entries.array(),
                        count * Wire.CHUNK_ENTRY_BYTES, entries.capacity()))) {
                    warnRateLimited("closed the connection of " + c.peer + ": request " + n + " fails its MAC");
                    return;
                }
                entries.flip().limit(count * Wire.CHUNK_ENTRY_BYTES);
                serve(c, pools.get(poolId), entries, count, status,
                        (flags & Wire.CHUNK_MACS) != 0 ? mac : null, n, tag);
            }
        } catch (Wire.NotAMemberException e) {
            warnRateLimited("refused " + c.peer + ": " + e.getMessage());
        } catch (IOException e) {
            LOG.debug("connection of {} ended: {}{}", c.peer, e.toString(), c.timedOut() ? " (timed out)" : "");
        } catch (RuntimeException e) {
            LOG.warn("closed the connection of {} on an unexpected error", c.peer, e);
        } finally {
            drop(c);
            if (session != null) {
                session.ended();
            }
        }
    }

    /** One control request: its body and MAC follow the header; the answer goes back under the session's MAC. */
    private void answerControl(Connection c, Session session, ByteBuffer header, int length, Mac mac, long n)
            throws IOException {
        ByteBuffer body = ByteBuffer.allocate(length + Wire.MAC_BYTES);
        c.readFully(body);
        mac.update(ByteBuffer.allocate(8).putLong(0, n).array());
        mac.update(header.array());
        mac.update(body.array(), 0, length);
        if (!MessageDigest.isEqual(mac.doFinal(), Arrays.copyOfRange(body.array(), length, body.capacity()))) {
            throw new Wire.NotAMemberException("control request " + n + " of " + c.peer + " fails its MAC");
        }
        byte[] answer = control.answer(session, Arrays.copyOf(body.array(), length));
        if (answer.length > Wire.MAX_CONTROL_BYTES) {
            throw new IllegalStateException("control answer of " + answer.length + " bytes exceeds "
                    + Wire.MAX_CONTROL_BYTES);
        }
        c.writeFully(ByteBuffer.wrap(Wire.controlAnswer(mac, n, answer)));
    }

    /** A member's control session: what its requests set up ends with its connection. */
    private static final class Session implements ControlChannel.Session {
        private final Connection connection;
        private final List<Runnable> onEnd = new ArrayList<>();
        private boolean ended;

        Session(Connection connection) {
            this.connection = connection;
        }

        @Override
        public java.net.SocketAddress peer() {
            return connection.peer;
        }

        @Override
        public void onEnd(Runnable r) {
            synchronized (this) {
                if (!ended) {
                    onEnd.add(r);
                    return;
                }
            }
            r.run();
        }

        void ended() {
            List<Runnable> rs;
            synchronized (this) {
                ended = true;
                rs = new ArrayList<>(onEnd);
                onEnd.clear();
            }
            for (Runnable r : rs) {
                try {
                    r.run();
                } catch (RuntimeException e) {
                    LOG.warn("cleaning up after the control session of {} failed: {}", connection.peer, e.toString());
                }
            }
        }
    }

    /**
     * Streams the requested chunks while the pool holds each, each followed by its MAC when {@code mac} is given;
     * the first chunk it cannot serve ends the response. Memory the JVM addresses goes to the socket in place; other
     * memory through the staging ring, a window at a time.
     */
    private void serve(Connection c, ServedPool pool, ByteBuffer entries, int count, ByteBuffer status, Mac mac,
                       long n, byte[] tag) throws IOException {
        boolean serving = pool != null && !pool.isClosed();
        ByteBuffer view = serving && ring == null ? device.hostView(pool.buffer()).orElse(null) : null;
        long size = pool == null ? 0 : pool.buffer().size();
        for (int i = 0; i < count; i++) {
            int entry = entries.position();
            ChunkKey key = new ChunkKey(entries.getLong(), entries.getLong());
            long generation = entries.getLong();
            long offset = entries.getLong();
            long length = entries.getLong();
            if (!serving || view == null && ring == null) {
                stop(c, status, Wire.NOT_OFFERED);
                return;
            }
            if (offset < 0 || length <= 0 || offset > size - length) {
                stop(c, status, Wire.OUT_OF_RANGE);
                return;
            }
            ServedPool.Hold hold = pool.hold(key, generation, offset, length);
            if (hold == null) {
                stop(c, status, Wire.NOT_OFFERED);
                return;
            }
            try {
                status.clear().put(Wire.DATA).flip();
                c.writeFully(status);
                if (mac != null) {
                    Wire.chunkMacStart(mac, n, i, entries.array(), entry);
                }
                if (view != null) {
                    view.limit(view.capacity()).position((int) offset).limit((int) (offset + length));
                    if (mac != null) {
                        mac.update(view.duplicate());
                    }
                    c.writeFully(view);
                } else {
                    sendStaged(c, pool, offset, length, mac);
                }
                if (mac != null) {
                    Wire.chunkMacEnd(mac, tag);
                    c.writeFully(ByteBuffer.wrap(tag));
                }
            } finally {
                hold.close();
            }
        }
        stop(c, status, Wire.DONE);
    }

    /** Copies the chunk into staging slots a window at a time, one batched device copy each, and sends them. */
    private void sendStaged(Connection c, ServedPool pool, long offset, long length, Mac mac) throws IOException {
        for (long at = 0; at < length; ) {
            StagingRing.Slot slot = ring.acquire(config.ioTimeoutMillis());
            try {
                int window = (int) Math.min(slot.view().capacity(), length - at);
                try {
                    device.copy(pool.buffer(), slot.buffer(), CopyBatch.builder().add(offset + at, 0, window).build())
                            .join();
                } catch (RuntimeException e) {
                    throw new IOException("staging copy of the pool failed: " + e, e);
                }
                ByteBuffer bytes = slot.view().duplicate().clear().limit(window);
                if (mac != null) {
                    mac.update(bytes.duplicate());
                }
                c.writeFully(bytes);
                at += window;
            } finally {
                ring.release(slot);
            }
        }
    }

    private static void stop(Connection c, ByteBuffer status, byte code) throws IOException {
        status.clear().put(code).flip();
        c.writeFully(status);
    }

    private void drop(Connection c) {
        c.close();
        open.remove(c);
        watchdog.forget(c);
        synchronized (this) {
            proving.remove(c);
            waiting.remove(c);
        }
    }

    /** At warn level at most every 10 s, at debug otherwise: a peer that keeps failing must not flood the log. */
    private void warnRateLimited(String message) {
        long count = refused.incrementAndGet();
        long now = System.nanoTime();
        long last = lastWarnNanos.get();
        if (now - last >= WARN_EVERY_NANOS && lastWarnNanos.compareAndSet(last, now)) {
            LOG.warn("{} ({} refusals and failures so far)", message, count);
        } else {
            LOG.debug("{} ({} refusals and failures so far)", message, count);
        }
    }

    @Override
    public void close() {
        stop();
    }

    /**
     * Stops serving and waits up to 5 s for the connection threads.
     *
     * @return true when they all ended: nothing of this server reads the pools or the staging ring any more
     */
    boolean stop() {
        closed = true;
        closeQuietly(listener);
        for (Connection c : open) {
            drop(c);
        }
        workers.shutdownNow();
        boolean stopped = false;
        try {
            acceptor.join(TimeUnit.SECONDS.toMillis(5));
            stopped = workers.awaitTermination(5, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        pools.clear();
        return stopped;
    }

    /**
     * The configured address, else the bound one, else (wildcard) the first IPv4 address of an interface that is
     * up and not loopback, else such an IPv6 one, else loopback: a node with only loopback is a cluster of one.
     */
    static InetAddress advertisedAddress(TcpConfig config, InetSocketAddress bound) throws SocketException {
        if (config.advertise() != null) {
            return config.advertise();
        }
        if (!bound.getAddress().isAnyLocalAddress()) {
            return bound.getAddress();
        }
        InetAddress v6 = null;
        for (NetworkInterface ni : Collections.list(NetworkInterface.getNetworkInterfaces())) {
            if (!ni.isUp() || ni.isLoopback()) {
                continue;
            }
            for (InetAddress a : Collections.list(ni.getInetAddresses())) {
                if (a.isLinkLocalAddress() || a.isLoopbackAddress()) {
                    continue;
                }
                if (a instanceof Inet4Address) {
                    return a;
                }
                if (v6 == null) {
                    v6 = a;
                }
            }
        }
        return v6 != null ? v6 : InetAddress.getLoopbackAddress();
    }

    private static void pause(long millis) {
        try {
            Thread.sleep(millis);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    private static Thread daemon(Runnable r, String name) {
        Thread t = new Thread(r, name);
        t.setDaemon(true);
        return t;
    }

    private static void closeQuietly(java.nio.channels.Channel ch) {
        try {
            ch.close();
        } catch (IOException ignored) {
            // nothing more to do for a socket that is going away
        }
    }
}
