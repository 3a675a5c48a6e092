package io.kvmarket.transfer.tcp;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.device.Device;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;
import io.kvmarket.transfer.Locality;
import io.kvmarket.transfer.Route;
import io.kvmarket.transfer.ServedPool;
import io.kvmarket.transfer.TransferException;
import io.kvmarket.transfer.TransferFailure;
import io.kvmarket.transfer.Transport;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import javax.crypto.Mac;

import java.io.IOException;
import java.net.ConnectException;
import java.net.InetSocketAddress;
import java.net.StandardSocketOptions;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.security.MessageDigest;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedDeque;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Between nodes over TCP, both sides, plain NIO. The exporter's side serves its pools to cluster members
 * ({@link TcpServer}); the importer's side pulls: one request per source naming each chunk's key, generation and
 * span, answered by the chunks' bytes in order, read from the socket straight into the engine's memory. Connections
 * are authenticated once (cluster secret, {@link Wire}) and kept per peer for reuse. Every failure is a
 * {@link TransferException} saying how many chunks landed whole first.
 *
 * <p>Memory this JVM addresses ({@link Device#isHostAddressable}) moves between socket and memory in place. Other
 * memory (a GPU's) moves through a bounded {@link StagingRing} of the device's staging memory (pinned host memory),
 * a window per batched device copy; a device without staging memory gets no TCP at all, said once.
 */
public final class TcpTransport implements Transport {

    private static final Logger LOG = LoggerFactory.getLogger(TcpTransport.class);
    private static final int SKIP_BYTES = 64 * 1024;
    /** Idle connections kept per peer: enough for bursts, few enough not to crowd the peer's connection limit. */
    static final int MAX_IDLE_PER_PEER = 4;
    private static final AtomicInteger TRANSPORTS = new AtomicInteger();

    private final Device device;
    private final long nodeId;
    private final TcpConfig config;
    private final Watchdog watchdog;
    /**
     * Staging for a device whose memory the JVM cannot address, for fetching; null when it can, or when it has none.
     * The server has a ring of its own: a fetcher holds its slot while it waits for a peer's server, which must never
     * wait for that slot in turn (two nodes importing from each other would deadlock).
     */
    private final StagingRing ring;
    private final StagingRing serveRing;
    private final TcpServer server;
    private final ThreadPoolExecutor fetchers;
    private final Map<InetSocketAddress, ConcurrentLinkedDeque<Connection>> idle = new ConcurrentHashMap<>();
    private final Set<CompletableFuture<Void>> running = ConcurrentHashMap.newKeySet();
    /** Fetches whose thread has begun: close() fails those only once their thread ended. */
    private final Set<CompletableFuture<Void>> begun = ConcurrentHashMap.newKeySet();
    private volatile boolean closed;

    private TcpTransport(Device device, long nodeId, TcpConfig config, Watchdog watchdog, StagingRing ring,
                         StagingRing serveRing, TcpServer server) {
        this.device = device;
        this.nodeId = nodeId;
        this.config = config;
        this.watchdog = watchdog;
        this.ring = ring;
        this.serveRing = serveRing;
        this.server = server;
        int id = TRANSPORTS.incrementAndGet();
        AtomicInteger threads = new AtomicInteger();
        this.fetchers = new ThreadPoolExecutor(config.fetchThreads(), config.fetchThreads(), 30, TimeUnit.SECONDS,
                new LinkedBlockingQueue<>(4096), r -> {
                    Thread t = new Thread(r, "kvmarket-tcp-fetch-" + id + "-" + threads.incrementAndGet());
                    t.setDaemon(true);
                    return t;
                });
        this.fetchers.allowCoreThreadTimeOut(true);
    }

    /**
     * Opens the transport for {@code device}'s memory on node {@code nodeId}. It serves when the configuration
     * binds an address and the device's memory is addressable here; a bind that fails (the port is taken) leaves it
     * fetching only, with one warning.
     */
    public static TcpTransport open(Device device, long nodeId, TcpConfig config) {
        Watchdog watchdog = new Watchdog("kvmarket-tcp-watchdog");
        StagingRing ring = null;
        StagingRing serveRing = null;
        if (!device.isHostAddressable()) {
            try {
                ring = new StagingRing(device, config.stagingSlots(), config.stagingSlotBytes());
            } catch (UnsupportedOperationException e) {
                LOG.warn("TCP transport cannot reach {} memory (no host view, no staging memory): it moves nothing",
                        device.name());
            }
        }
        TcpServer server = null;
        if (config.bind() != null && (device.isHostAddressable() || ring != null)) {
            try {
                serveRing = ring == null ? null
                        : new StagingRing(device, config.stagingSlots(), config.stagingSlotBytes());
                server = TcpServer.start(device, serveRing, config, watchdog);
            } catch (IOException | RuntimeException e) {
                if (serveRing != null) {
                    serveRing.close();
                    serveRing = null;
                }
                LOG.warn("TCP transport cannot listen on {} ({}): this process serves nothing over TCP",
                        config.bind(), e.toString());
            }
        }
        return new TcpTransport(device, nodeId, config, watchdog, ring, serveRing, server);
    }

    /** True when this transport can move this device's memory: in place, or through staging. */
    private boolean reaches() {
        return device.isHostAddressable() || ring != null;
    }

    @Override
    public String name() {
        return "tcp";
    }

    @Override
    public int endpointKind() {
        return Endpoint.TCP;
    }

    /** Where peers reach this process's server, or empty when it serves nothing. */
    public Optional<InetSocketAddress> serving() {
        return server == null ? Optional.empty() : Optional.of(server.advertised());
    }

    @Override
    public Optional<Endpoint> advertise(ServedPool pool) {
        if (server == null || closed) {
            return Optional.empty();
        }
        return Optional.of(new TcpEndpoint(server.advertised(), server.serve(pool)).encode());
    }

    /**
     * Offers with a TCP endpoint, when this transport reaches the device's memory. The figures are the configured
     * seed; the importer learns the real throughput from the fetches it runs.
     */
    @Override
    public Optional<Route> route(Offer offer) {
        if (!reaches() || offer.endpoint(Endpoint.TCP).isEmpty()) {
            return Optional.empty();
        }
        Locality locality = offer.nodeId() == nodeId ? Locality.SAME_NODE : Locality.OTHER_NODE;
        return Optional.of(new Route(locality, config.seedLatencyMicros() * 1000, config.seedGigabytesPerSecond()));
    }

    @Override
    public CompletableFuture<Void> fetch(List<Offer> chunks, DeviceBuffer dst, CopyBatch batch) {
        if (closed) {
            throw new IllegalStateException("TCP transport is closed");
        }
        if (chunks.isEmpty()) {
            throw new IllegalArgumentException("a fetch needs at least one chunk");
        }
        TcpEndpoint endpoint;
        try {
            endpoint = TcpEndpoint.decode(chunks.get(0).endpoint(Endpoint.TCP).orElseThrow(
                    () -> new IllegalArgumentException("the offer has no TCP endpoint")));
        } catch (IllegalArgumentException e) {
            return CompletableFuture.failedFuture(new TransferException(TransferFailure.MALFORMED,
                    "malformed TCP endpoint in " + chunks.get(0) + ": " + e.getMessage(), e));
        }
        ByteBuffer view = ring == null ? device.hostView(dst).orElse(null) : null;
        if (view == null && ring == null) {
            return CompletableFuture.failedFuture(new TransferException(TransferFailure.UNREACHABLE,
                    "TCP transport cannot write into " + device.name() + " memory: no host view, no staging"));
        }
        FetchPlan plan = FetchPlan.of(chunks, batch, dst.size());
        CompletableFuture<Void> done = new CompletableFuture<>();
        running.add(done);
        done.whenComplete((ok, error) -> {
            running.remove(done);
            begun.remove(done);
        });
        try {
            fetchers.execute(() -> {
                begun.add(done);
                try {
                    pull(endpoint, plan, dst, view);
                    done.complete(null);
                } catch (TransferException e) {
                    done.completeExceptionally(e);
                } catch (RuntimeException | Error e) { // an Error too: the engine must not wait forever
                    done.completeExceptionally(new TransferException(TransferFailure.FAILED,
                            "TCP fetch from " + endpoint.address() + " failed: " + e, e));
                    if (e instanceof Error) {
                        throw e;
                    }
                }
            });
        } catch (RejectedExecutionException e) {
            done.completeExceptionally(new TransferException(TransferFailure.FAILED, closed ? "TCP transport closed"
                    : "TCP transport has " + fetchers.getQueue().size() + " fetches queued; refusing more"));
        }
        // A close() from here on fails `done` itself, once no thread can still write into the engine's memory.
        return done;
    }

    /**
     * Runs one pull on a pooled connection, or on a fresh one when a pooled one turns out closed by its peer before
     * any byte came back. Only a connection whose response ended as it should goes back to the pool.
     */
    private void pull(TcpEndpoint endpoint, FetchPlan plan, DeviceBuffer dst, ByteBuffer view) {
        InetSocketAddress peer = endpoint.address();
        Connection c = pooled(peer);
        boolean fresh = c == null;
        if (fresh) {
            c = connect(peer);
        }
        while (true) {
            Pull p = new Pull(plan, dst, view, config.chunkMacs());
            try {
                p.run(c, endpoint.poolId());
                release(peer, c);
                return;
            } catch (TransferException stop) {
                // In step with the server, unless someone on the way forged the stop: a fresh connection is cheap.
                closeQuietly(c);
                throw stop;
            } catch (RuntimeException | Error e) { // out of step with the stream: nobody may read on after it
                closeQuietly(c);
                throw e;
            } catch (IOException e) {
                closeQuietly(c);
                if (fresh || p.anyByte) {
                    throw failed(peer, p, c, e);
                }
                LOG.debug("pooled connection to {} was closed ({}); connecting afresh", peer, e.toString());
                fresh = true;
                c = connect(peer);
            }
        }
    }

    private TransferException failed(InetSocketAddress peer, Pull p, Connection c, IOException e) {
        String why = c.timedOut() ? "no byte moved for " + config.ioTimeoutMillis() + " ms" : e.toString();
        if (closed) {
            why = "TCP transport closed";
        }
        return new TransferException(TransferFailure.FAILED, "TCP pull from " + peer + " broke after "
                + p.delivered + " of " + p.plan.chunks.size() + " chunks: " + why, e, p.delivered);
    }

    private Connection connect(InetSocketAddress peer) {
        Connection c = null;
        try {
            SocketChannel ch = SocketChannel.open();
            c = new Connection(ch, peer, config.ioTimeoutMillis());
            watchdog.watch(c);
            c.hardDeadline(System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(config.connectTimeoutMillis()));
            if (closed) {
                throw new IOException("TCP transport closed");
            }
            ch.connect(peer);
            if (closed) { // close() ran meanwhile: its watchdog no longer guards this socket
                throw new IOException("TCP transport closed");
            }
            ch.setOption(StandardSocketOptions.TCP_NODELAY, true);
            c.session = Wire.sessionMac(Wire.clientHandshake(c, config.secret()));
            return c;
        } catch (ConnectException e) {
            closeQuietly(c);
            throw new TransferException(TransferFailure.SOURCE_GONE, "nothing serves at " + peer
                    + " any more (" + e.getMessage() + "): the exporter is gone", e);
        } catch (Wire.NotAMemberException e) {
            closeQuietly(c);
            throw new TransferException(TransferFailure.UNREACHABLE, e.getMessage(), e);
        } catch (IOException e) {
            boolean timedOut = c != null && c.timedOut();
            closeQuietly(c);
            if (closed) {
                throw new TransferException(TransferFailure.FAILED, "TCP transport closed", e);
            }
            throw new TransferException(TransferFailure.UNREACHABLE, "cannot reach " + peer + ": "
                    + (timedOut ? "no answer within " + config.connectTimeoutMillis() + " ms" : e.toString()), e);
        }
    }

    private void closeQuietly(Connection c) {
        if (c != null) {
            c.close();
            watchdog.forget(c);
        }
    }

    private Connection pooled(InetSocketAddress peer) {
        ConcurrentLinkedDeque<Connection> q = idle.get(peer);
        for (Connection c = q == null ? null : q.pollFirst(); c != null; c = q.pollFirst()) {
            if (c.channel.isOpen()) {
                return c;
            }
            watchdog.forget(c);
        }
        return null;
    }

    private void release(InetSocketAddress peer, Connection c) {
        ConcurrentLinkedDeque<Connection> q = idle.computeIfAbsent(peer, p -> new ConcurrentLinkedDeque<>());
        if (q.size() >= MAX_IDLE_PER_PEER) {
            closeQuietly(c);
            return;
        }
        c.noDeadline();
        c.idleSinceNanos = System.nanoTime();
        q.addFirst(c);
        if (closed) {
            closeIdle();
        }
    }

    /** Connections pooled at once, for tests. */
    int pooledConnections() {
        return idle.values().stream().mapToInt(ConcurrentLinkedDeque::size).sum();
    }

    /** Connections the server holds open now, for tests. */
    int servedConnections() {
        return server == null ? 0 : server.openConnections();
    }

    /** Pools served now, for tests. */
    int servedPools() {
        return server == null ? 0 : server.servedPools();
    }

    /** Drops pooled connections idle for half the server's idle limit, and pools that closed. */
    @Override
    public void evictStale() {
        long limit = TimeUnit.MILLISECONDS.toNanos(config.idleTimeoutMillis()) / 2;
        long now = System.nanoTime();
        for (ConcurrentLinkedDeque<Connection> q : idle.values()) {
            for (Connection c : q) {
                if (now - c.idleSinceNanos > limit && q.remove(c)) {
                    closeQuietly(c);
                }
            }
        }
        if (server != null) {
            server.forgetClosedPools();
        }
    }

    private void closeIdle() {
        for (ConcurrentLinkedDeque<Connection> q : idle.values()) {
            for (Connection c = q.pollFirst(); c != null; c = q.pollFirst()) {
                closeQuietly(c);
            }
        }
    }

    /**
     * Stops serving, fails fetches still running or queued, closes every connection. A fetch that has begun fails
     * once its thread stopped (close waits up to 5 s; past that, the thread fails its own fetch when its copy ends),
     * so no byte lands in the engine's memory after the engine was told the fetch failed. Idempotent.
     */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        boolean serverStopped = server == null || server.stop();
        fetchers.shutdownNow();
        watchdog.close();
        closeIdle();
        boolean stopped = false;
        try {
            stopped = fetchers.awaitTermination(5, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        // A ring a thread may still copy through (a device copy cannot be interrupted) is kept until exit.
        if (ring != null && stopped) {
            ring.close();
        }
        if (serveRing != null && serverStopped) {
            serveRing.close();
        }
        for (CompletableFuture<Void> f : running) {
            if (stopped || !begun.contains(f)) {
                f.completeExceptionally(new TransferException(TransferFailure.FAILED, "TCP transport closed"));
            }
        }
    }

    /** One request and its response on one connection; counts what landed so a failure keeps the prefix. */
    private final class Pull {
        final FetchPlan plan;
        final DeviceBuffer dst;
        /** The destination as the JVM addresses it, or null to write it through the staging ring. */
        final ByteBuffer view;
        final boolean chunkMacs;
        int delivered;
        boolean anyByte;
        private ByteBuffer scratch;

        Pull(FetchPlan plan, DeviceBuffer dst, ByteBuffer view, boolean chunkMacs) {
            this.plan = plan;
            this.dst = dst;
            this.view = view;
            this.chunkMacs = chunkMacs;
        }

        void run(Connection c, long poolId) throws IOException {
            List<Offer> chunks = plan.chunks;
            ByteBuffer status = ByteBuffer.allocateDirect(1);
            Mac mac = c.session;
            for (int from = 0; from < chunks.size(); from += TcpServer.MAX_CHUNKS) {
                int to = Math.min(chunks.size(), from + TcpServer.MAX_CHUNKS);
                int entriesBytes = (to - from) * Wire.CHUNK_ENTRY_BYTES;
                ByteBuffer request = ByteBuffer.allocate(Wire.REQUEST_HEADER_BYTES + entriesBytes + Wire.MAC_BYTES);
                request.putInt(Wire.REQUEST).putInt(chunkMacs ? Wire.CHUNK_MACS : 0).putLong(poolId).putInt(to - from);
                for (int i = from; i < to; i++) {
                    Offer o = chunks.get(i);
                    request.putLong(o.key().hi()).putLong(o.key().lo()).putLong(o.generation()).putLong(o.offset())
                            .putLong(o.length());
                }
                long n = c.nextRequest++;
                mac.update(ByteBuffer.allocate(8).putLong(0, n));
                mac.update(request.array(), 0, request.position());
                request.put(mac.doFinal()).flip();
                c.armIoDeadline();
                c.writeFully(request);
                byte[] entries = request.array();
                for (int i = from; i < to; i++) {
                    byte code = readStatus(c, status);
                    if (code != Wire.DATA) {
                        throw stopped(c, code, i);
                    }
                    if (chunkMacs) {
                        Wire.chunkMacStart(mac, n, i - from, entries,
                                Wire.REQUEST_HEADER_BYTES + (i - from) * Wire.CHUNK_ENTRY_BYTES);
                    }
                    receive(c, chunks.get(i), plan.pieces[i], chunkMacs ? mac : null);
                    if (chunkMacs) {
                        checkMac(c, mac, i);
                    }
                    delivered++;
                }
                byte end = readStatus(c, status);
                if (end != Wire.DONE) {
                    throw new IOException("server " + c.peer + " sent status " + end + " where the response ends");
                }
            }
        }

        /** Reads the chunk's MAC and compares: bytes changed on the way never count as delivered. */
        private void checkMac(Connection c, Mac mac, int i) throws IOException {
            byte[] expected = new byte[Wire.MAC_BYTES];
            Wire.chunkMacEnd(mac, expected);
            ByteBuffer tag = ByteBuffer.allocate(Wire.MAC_BYTES);
            c.readFully(tag);
            if (!MessageDigest.isEqual(expected, tag.array())) {
                throw new IOException("chunk " + i + " from " + c.peer + " fails its MAC: changed on the way");
            }
        }

        private byte readStatus(Connection c, ByteBuffer status) throws IOException {
            status.clear();
            c.readFully(status);
            anyByte = true;
            return status.get(0);
        }

        /**
         * Reads one chunk's bytes, each piece straight into place, skipping spans nobody asked for; every byte also
         * goes through {@code mac} when given.
         */
        private void receive(Connection c, Offer chunk, long[] pieces, Mac mac) throws IOException {
            if (view == null) {
                receiveStaged(c, chunk.length(), pieces, mac);
                return;
            }
            long at = 0;
            for (int p = 0; p < pieces.length; p += 3) {
                if (pieces[p] > at) {
                    skip(c, pieces[p] - at, mac);
                }
                int start = (int) pieces[p + 1];
                view.limit(view.capacity()).position(start).limit((int) (start + pieces[p + 2]));
                c.readFully(view);
                if (mac != null) {
                    mac.update(view.position(start));
                }
                at = pieces[p] + pieces[p + 2];
            }
            if (chunk.length() > at) {
                skip(c, chunk.length() - at, mac);
            }
        }

        /**
         * Reads one chunk a staging window at a time, each window then copied into its pieces' places by one
         * batched device call.
         */
        private void receiveStaged(Connection c, long length, long[] pieces, Mac mac) throws IOException {
            for (long window = 0; window < length; ) {
                StagingRing.Slot slot = ring.acquire(config.ioTimeoutMillis());
                try {
                    int n = (int) Math.min(slot.view().capacity(), length - window);
                    ByteBuffer bytes = slot.view().duplicate().clear().limit(n);
                    c.readFully(bytes);
                    if (mac != null) {
                        mac.update(bytes.flip());
                    }
                    CopyBatch.Builder batch = CopyBatch.builder();
                    for (int p = 0; p < pieces.length; p += 3) {
                        long from = Math.max(pieces[p], window);
                        long to = Math.min(pieces[p] + pieces[p + 2], window + n);
                        if (from < to) {
                            batch.add(from - window, pieces[p + 1] + (from - pieces[p]), to - from);
                        }
                    }
                    if (batch.segments() > 0) {
                        try {
                            device.copy(slot.buffer(), dst, batch.build()).join();
                        } catch (RuntimeException e) {
                            throw new IOException("copy out of staging failed: " + e, e);
                        }
                    }
                    window += n;
                } finally {
                    ring.release(slot);
                }
            }
        }

        private void skip(Connection c, long n, Mac mac) throws IOException {
            ByteBuffer s = scratch();
            while (n > 0) {
                s.clear().limit((int) Math.min(s.capacity(), n));
                c.readFully(s);
                if (mac != null) {
                    mac.update(s.flip());
                }
                n -= s.limit();
            }
        }

        private ByteBuffer scratch() {
            if (scratch == null) {
                scratch = ByteBuffer.allocateDirect(SKIP_BYTES);
            }
            return scratch;
        }

        /** The server stopped at chunk {@code i}: the connection stays in step, the prefix before it landed. */
        private TransferException stopped(Connection c, byte code, int i) throws IOException {
            String chunk = plan.chunks.get(i).toString();
            return switch (code) {
                case Wire.NOT_OFFERED -> new TransferException(TransferFailure.SOURCE_GONE, "server " + c.peer
                        + " no longer offers " + chunk, null, delivered);
                case Wire.OUT_OF_RANGE -> new TransferException(TransferFailure.MALFORMED, chunk
                        + " lies outside the pool it names at " + c.peer, null, delivered);
                default -> throw new IOException("server " + c.peer + " sent unknown status " + code);
            };
        }
    }
}
