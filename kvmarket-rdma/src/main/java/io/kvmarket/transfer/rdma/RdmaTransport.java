package io.kvmarket.transfer.rdma;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.device.Device;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;
import io.kvmarket.transfer.Locality;
import io.kvmarket.transfer.PushTransport;
import io.kvmarket.transfer.Route;
import io.kvmarket.transfer.ServedPool;
import io.kvmarket.transfer.TransferException;
import io.kvmarket.transfer.TransferFailure;
import io.kvmarket.transfer.Transport;
import io.kvmarket.transfer.tcp.ControlChannel;
import org.bytedeco.javacpp.Pointer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.lang.ref.ReferenceQueue;
import java.lang.ref.WeakReference;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.OptionalLong;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Between nodes over RDMA verbs, both sides; imports pull. The exporter registers each pool it serves for remote
 * READ only (nobody can write into an engine's memory through it) and advertises the registration's key and address
 * with its control address. The importer sets up reliable-connection queue pairs to the exporter through the control
 * channel (a cluster member's authenticated request over the TCP transport's protocol, {@link ControlChannel}), then
 * posts one chained batch of RDMA READs per import, straight from the exporter's pool into its own KV cache, and
 * waits for one completion per queue pair. The exporter's CPU takes no part in the copy; whether the bytes are still
 * the offered ones is settled afterwards by the import's generation check, as for every transport.
 *
 * <p>A failure completion (bad key or span, a peer that died, a queue pair driven to error) or the deadline tears
 * the queue pairs down before the fetch fails: no read of a failed import lands after its future completes. What
 * landed in full before the failure, from the first chunk, is reported as delivered. The exporter's queue pairs for
 * a peer live as long as that peer's control connection: a peer that dies leaves nothing behind.
 */
public final class RdmaTransport implements Transport, PushTransport {

    private static final Logger LOG = LoggerFactory.getLogger(RdmaTransport.class);
    private static final AtomicInteger TRANSPORTS = new AtomicInteger();
    static final byte CONNECT = 1;
    static final byte PING = 2;
    static final byte RELEASE = 3;
    static final byte OK = 0;
    private static final byte REFUSED = 1;

    private final Device device;
    private final long nodeId;
    private final RdmaConfig config;
    private final VerbsContext ctx;
    private final ControlChannel.Server server;
    private final ControlChannel.Connector connector;
    private final ThreadPoolExecutor fetchers;
    private final Pushes pushes;
    /** Pools served, by identity: their registration, advertised endpoint, and the hold on their memory. */
    private final Map<ServedPool, Served> served = new IdentityHashMap<>();
    /** Queue pairs peers set up here, by the number of each channel's first queue pair. */
    private final Map<Integer, ServedChannel> servedChannels = new ConcurrentHashMap<>();
    private final Map<InetSocketAddress, RdmaPeer> peers = new ConcurrentHashMap<>();
    /** Registrations of destination buffers, dropped when their buffer is collected. */
    private final List<LocalRegion> localRegions = new ArrayList<>();
    private final ReferenceQueue<DeviceBuffer> collected = new ReferenceQueue<>();
    private final Set<CompletableFuture<Void>> running = ConcurrentHashMap.newKeySet();
    private volatile boolean closed;
    /**
     * Held while anything is made from the device context (a registration, a channel) and while close() tears the
     * context down: nothing is made from a closed context, whichever thread races close().
     */
    private final Object life = new Object();
    /** Channels each member's control session holds here; the session's end closes them. */
    private final Map<ControlChannel.Session, List<ServedChannel>> bySession = new IdentityHashMap<>();

    private RdmaTransport(Device device, long nodeId, RdmaConfig config, VerbsContext ctx) throws IOException {
        this.device = device;
        this.nodeId = nodeId;
        this.config = config;
        this.ctx = ctx;
        int id = TRANSPORTS.incrementAndGet();
        AtomicInteger threads = new AtomicInteger();
        this.fetchers = new ThreadPoolExecutor(config.fetchThreads(), config.fetchThreads(), 30, TimeUnit.SECONDS,
                new LinkedBlockingQueue<>(4096), r -> {
                    Thread t = new Thread(r, "kvmarket-rdma-fetch-" + id + "-" + threads.incrementAndGet());
                    t.setDaemon(true);
                    return t;
                });
        this.fetchers.allowCoreThreadTimeOut(true);
        this.pushes = new Pushes(this, id);
        this.connector = ControlChannel.connector(config.control());
        try {
            this.server = config.control().bind() == null ? null
                    : ControlChannel.serve(config.control(), device, this::answer);
        } catch (IOException | RuntimeException e) {
            connector.close();
            fetchers.shutdown();
            pushes.close();
            throw e;
        }
    }

    /**
     * Opens the device port the configuration names and, when it binds an address, the control server that lets
     * members connect queue pairs to this process's pools.
     *
     * @throws IllegalStateException    when verbs are unavailable ({@link Verbs#unavailabilityCause})
     * @throws IllegalArgumentException when the device cannot have the configured queues
     * @throws VerbsException           when the device cannot be opened
     * @throws IOException              when the control address cannot be bound
     */
    public static RdmaTransport open(Device device, long nodeId, RdmaConfig config) throws IOException {
        VerbsContext ctx = VerbsContext.open(config.device(), config.port(), config.gidIndex());
        try {
            if (config.sendQueueDepth() > ctx.maxWorkRequests) {
                throw new IllegalArgumentException("sendQueueDepth " + config.sendQueueDepth() + " exceeds the "
                        + ctx.maxWorkRequests + " work requests a queue pair of this device holds");
            }
            return new RdmaTransport(device, nodeId, config, ctx);
        } catch (IOException | RuntimeException e) {
            ctx.close();
            throw e;
        }
    }

    @Override
    public String name() {
        return "rdma";
    }

    @Override
    public int endpointKind() {
        return Endpoint.RDMA;
    }

    /** Where members set up queue pairs to this process, or empty when it serves nothing. */
    public Optional<InetSocketAddress> serving() {
        return server == null ? Optional.empty() : Optional.of(server.advertised());
    }

    /**
     * Registers the pool's memory for remote READ (once per pool) and names it; the registration ends, before the
     * pool frees its memory, when the pool closes.
     */
    @Override
    public Optional<Endpoint> advertise(ServedPool pool) {
        if (server == null || closed) {
            return Optional.empty();
        }
        synchronized (served) {
            if (closed) {
                return Optional.empty();
            }
            Served s = served.get(pool);
            if (s != null) {
                return Optional.of(s.endpoint.encode());
            }
            long[] where = addressOf(pool.buffer());
            if (where == null) {
                LOG.warn("RDMA transport cannot register {} memory: no host view and no device address", device.name());
                return Optional.empty();
            }
            Served fresh = new Served(pool);
            ServedPool.Hold hold = pool.holdMemory(fresh::end);
            if (hold == null) {
                return Optional.empty();
            }
            try {
                fresh.start(register(where[0], pool.buffer().size(), VerbsContext.REMOTE_READ, where[1] != 0), hold);
            } catch (RuntimeException e) {
                hold.close();
                LOG.warn("RDMA transport cannot register an export pool of {} bytes: {}", pool.buffer().size(),
                        e.getMessage());
                return Optional.empty();
            }
            served.put(pool, fresh);
            return Optional.of(fresh.endpoint.encode());
        }
    }

    /** A served pool: its registration lives until the pool closes or this transport does. */
    private final class Served {
        private final ServedPool pool;
        private VerbsContext.MemoryRegion region;
        private ServedPool.Hold hold;
        private RdmaEndpoint endpoint;

        Served(ServedPool pool) {
            this.pool = pool;
        }

        void start(VerbsContext.MemoryRegion region, ServedPool.Hold hold) {
            this.region = region;
            this.hold = hold;
            this.endpoint = new RdmaEndpoint(server.advertised(), ctx.gid, ctx.lid, region.rkey, region.address,
                    region.length);
        }

        /** Deregisters, then lets the pool free its memory; a failure of either is logged, never thrown. */
        void end() {
            synchronized (served) {
                if (served.get(pool) == this) {
                    served.remove(pool);
                }
            }
            try {
                if (region != null) {
                    region.close();
                }
                if (hold != null) {
                    hold.close();
                }
            } catch (RuntimeException e) {
                // A registration that would not close keeps its hold: freeing memory a NIC may read is worse.
                LOG.warn("could not let go of a served pool: {}", e.toString());
            }
        }
    }

    @Override
    public Optional<Route> route(Offer offer) {
        if (closed || offer.endpoint(Endpoint.RDMA).isEmpty()) {
            return Optional.empty();
        }
        Locality locality = offer.nodeId() == nodeId ? Locality.SAME_NODE : Locality.OTHER_NODE;
        return Optional.of(new Route(locality, config.seedLatencyMicros() * 1000, config.seedGigabytesPerSecond()));
    }

    @Override
    public CompletableFuture<Void> fetch(List<Offer> chunks, DeviceBuffer dst, CopyBatch batch) {
        if (closed) {
            throw new IllegalStateException("RDMA transport is closed");
        }
        if (chunks.isEmpty()) {
            throw new IllegalArgumentException("a fetch needs at least one chunk");
        }
        RdmaEndpoint source;
        try {
            source = RdmaEndpoint.decode(chunks.get(0).endpoint(Endpoint.RDMA).orElseThrow(
                    () -> new IllegalArgumentException("the offer has no RDMA endpoint")));
        } catch (IllegalArgumentException e) {
            return CompletableFuture.failedFuture(new TransferException(TransferFailure.MALFORMED,
                    "malformed RDMA endpoint in " + chunks.get(0) + ": " + e.getMessage(), e));
        }
        Endpoint first = chunks.get(0).endpoint(Endpoint.RDMA).orElseThrow();
        for (Offer o : chunks) {
            if (!first.equals(o.endpoint(Endpoint.RDMA).orElse(null))) {
                throw new IllegalArgumentException("the chunks of one fetch must name one source: " + o
                        + " names another RDMA endpoint than " + chunks.get(0));
            }
            if (o.offset() < 0 || o.length() <= 0 || o.offset() > source.length() - o.length()) {
                return CompletableFuture.failedFuture(new TransferException(TransferFailure.MALFORMED, o
                        + " lies outside the " + source.length() + "-byte pool its RDMA endpoint names"));
            }
        }
        ReadPlan plan = ReadPlan.of(chunks, batch, dst.size());
        LocalRegion local;
        try {
            local = local(dst);
        } catch (RuntimeException e) {
            return CompletableFuture.failedFuture(new TransferException(closed ? TransferFailure.FAILED
                    : TransferFailure.UNREACHABLE, "RDMA transport cannot register the destination: " + e.getMessage(),
                    e));
        }
        return transfer("RDMA fetch from " + source.control(), () -> pull(source, plan, local.region));
    }

    /**
     * Receiver of a push (a decode server): the spans are registered for remote write, each run of back-to-back
     * spans on its own, for this push only; the ticket names this process's control server.
     */
    @Override
    public PushTarget expectPush(DeviceBuffer dst, long[] dstOffsets, long[] lengths, long timeoutMillis) {
        if (server == null) {
            throw new IllegalStateException("this RDMA transport takes no pushes: it has no control server (bind off)");
        }
        if (closed) {
            throw new IllegalStateException("RDMA transport is closed");
        }
        return pushes.expect(dst, dstOffsets, lengths, timeoutMillis, server.advertised());
    }

    /** Sender of a push (a prefill server): RDMA WRITEs, the last of each queue pair with the push's immediate. */
    @Override
    public CompletableFuture<Void> push(byte[] ticket, DeviceBuffer src, long[] srcOffsets) {
        if (closed) {
            throw new IllegalStateException("RDMA transport is closed");
        }
        Pushes.Ticket t = Pushes.Ticket.decode(ticket);
        if (srcOffsets.length != t.lengths().length) {
            throw new IllegalArgumentException(srcOffsets.length + " source spans for a ticket of "
                    + t.lengths().length);
        }
        for (int i = 0; i < srcOffsets.length; i++) {
            if (srcOffsets[i] < 0 || srcOffsets[i] > src.size() - t.lengths()[i]) {
                throw new IllegalArgumentException("source span " + i + " [" + srcOffsets[i] + ", +" + t.lengths()[i]
                        + ") outside the source of " + src.size() + " bytes");
            }
        }
        VerbsContext.MemoryRegion local;
        try {
            local = local(src).region;
        } catch (RuntimeException e) {
            return CompletableFuture.failedFuture(new TransferException(closed ? TransferFailure.FAILED
                    : TransferFailure.UNREACHABLE, "RDMA transport cannot register the push's source: "
                    + e.getMessage(), e));
        }
        long[] offsets = srcOffsets.clone();
        return transfer("RDMA push to " + t.control(), () -> pushes.push(t, local, offsets));
    }

    /**
     * Runs one transfer on a fetch thread; every failure completes the future with a {@link TransferException}, an
     * Error too (the engine must not wait forever).
     */
    private CompletableFuture<Void> transfer(String what, Runnable body) {
        CompletableFuture<Void> done = new CompletableFuture<>();
        running.add(done);
        done.whenComplete((ok, error) -> running.remove(done));
        try {
            fetchers.execute(() -> {
                try {
                    body.run();
                    done.complete(null);
                } catch (TransferException e) {
                    done.completeExceptionally(e);
                } catch (RuntimeException | Error e) {
                    done.completeExceptionally(new TransferException(TransferFailure.FAILED, what + " failed: " + e, e));
                    if (e instanceof Error) {
                        throw e;
                    }
                }
            });
        } catch (RejectedExecutionException e) {
            done.completeExceptionally(new TransferException(TransferFailure.FAILED, closed ? "RDMA transport closed"
                    : "RDMA transport has " + fetchers.getQueue().size() + " transfers queued; refusing more"));
        }
        return done;
    }

    /** Reads the plan's segments on a channel to the source; tears the channel down on any failure. */
    private void pull(RdmaEndpoint source, ReadPlan plan, VerbsContext.MemoryRegion local) {
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(config.fetchDeadlineMillis());
        RdmaPeer peer;
        RdmaPeer.Channel pc;
        do { // a peer evictStale() dropped meanwhile takes no new channel: take the fresh one
            peer = peer(source.control());
            pc = peer.acquire(source, deadline);
            if (pc == null) {
                peers.remove(source.control(), peer);
            }
        } while (pc == null);
        boolean healthy = false;
        try {
            boolean[] landed = new boolean[plan.segments()];
            Stop stop = read(pc.channel(), source, plan, local, deadline, landed);
            if (stop == null) {
                healthy = true;
                return;
            }
            pc.channel().fail();
            // The exporter's registration refuses the read (its pool closed, or the offer names memory it never
            // registered), or the exporter stopped answering: either way its KV is gone from here.
            boolean gone = stop.status == QpChannel.WC_REM_ACCESS_ERR || stop.status == QpChannel.WC_RETRY_EXC_ERR;
            throw new TransferException(gone ? TransferFailure.SOURCE_GONE : TransferFailure.FAILED,
                    "RDMA read from " + source.control() + " failed: " + stop.why, null, plan.delivered(landed));
        } finally {
            peer.release(pc, healthy);
        }
    }

    /**
     * Runs {@code body}, which makes verbs objects from the device, unless this transport closed: close() tears the
     * device down only once no such body runs.
     *
     * @throws IllegalStateException when the transport is closed
     */
    <T> T whileOpen(java.util.function.Supplier<T> body) {
        synchronized (life) {
            if (closed) {
                throw new IllegalStateException("RDMA transport closed");
            }
            return body.get();
        }
    }

    /** Registers memory in the device's own protection domain, unless this transport closed. */
    VerbsContext.MemoryRegion register(long address, long length, int access, boolean cuda) {
        return whileOpen(() -> ctx.register(address, length, access, cuda));
    }

    /** Creates queue pairs in the device's own protection domain, unless this transport closed. */
    QpChannel channel(int queuePairs, int sendQueueDepth, int receiveQueueDepth, int access) {
        return whileOpen(() -> QpChannel.create(ctx, queuePairs, sendQueueDepth, receiveQueueDepth, access));
    }

    /** Brings a channel to RTS against the peer's half, within this device's and this configuration's limits. */
    void connect(QpChannel ch, QpSetup peer) {
        ch.connect(peer.remote(), Math.min(peer.mtu(), ctx.mtu), Math.min(config.readDepth(), ctx.maxReadDepth),
                config.ackTimeout(), config.retryCount());
    }

    VerbsContext context() {
        return ctx;
    }

    RdmaConfig config() {
        return config;
    }

    boolean isClosed() {
        return closed;
    }

    /** The control connection to {@code control}, shared with pulls from it. */
    RdmaPeer peer(InetSocketAddress control) {
        return peers.computeIfAbsent(control, c -> new RdmaPeer(this, connector, c));
    }

    /**
     * Posts the reads a window at a time (the channel's queues hold {@code queuePairs x sendQueueDepth}) and waits
     * for each window's completions, marking what landed.
     *
     * @return null when every segment landed, else why not
     */
    private Stop read(QpChannel ch, RdmaEndpoint source, ReadPlan plan, VerbsContext.MemoryRegion local,
                        long deadline, boolean[] landed) {
        int n = plan.segments();
        int window = ch.queuePairs() * ch.sendQueueDepth;
        for (int start = 0; start < n; start += window) {
            int count = Math.min(window, n - start);
            boolean whole = start == 0 && count == n;
            int runs = ch.post(QpChannel.OP_READ | QpChannel.MERGE, start, local.address, local.lkey, source.address(),
                    source.rkey(),
                    whole ? plan.localOff : Arrays.copyOfRange(plan.localOff, start, start + count),
                    whole ? plan.remoteOff : Arrays.copyOfRange(plan.remoteOff, start, start + count),
                    whole ? plan.length : Arrays.copyOfRange(plan.length, start, start + count), count);
            for (int got = 0; got < runs; ) {
                if (closed) {
                    return new Stop(-1, "RDMA transport closed");
                }
                if (deadline - System.nanoTime() <= 0) {
                    return new Stop(-1, "not complete within the " + config.fetchDeadlineMillis() + " ms deadline");
                }
                int k = ch.pollBefore(deadline);
                for (int i = 0; i < k; i++) {
                    int q = ch.qpIndex[i];
                    long wrId = ch.wrIds[i];
                    if (q < 0 || q >= runs) {
                        return new Stop(ch.status[i], "a completion of no queue pair of this import");
                    }
                    int from = start + runStart(q, count, runs);
                    int to = start + runStart(q + 1, count, runs);
                    if (ch.status[i] == QpChannel.WC_SUCCESS) {
                        Arrays.fill(landed, from, to, true);
                        got++;
                    } else {
                        // RC completes a queue pair's work in order: what it posted before the failed one landed.
                        if (wrId >= from && wrId < to) {
                            Arrays.fill(landed, from, (int) wrId, true);
                        }
                        return new Stop(ch.status[i], Verbs.completionStatus(ch.status[i]) + " on segment " + wrId
                                + " of " + n);
                    }
                }
            }
        }
        return null;
    }

    /** Where run {@code q} of a post begins: the shim gives the first {@code count % runs} runs one more segment. */
    static int runStart(int q, int count, int runs) {
        return q * (count / runs) + Math.min(q, count % runs);
    }

    /** Why reads stopped: a work completion's status (-1 for none) and the words for it. */
    private record Stop(int status, String why) {
    }

    /** The registration of {@code dst} for local reads and writes (imports land in it, pushes leave it), once. */
    private LocalRegion local(DeviceBuffer dst) {
        synchronized (localRegions) {
            dropCollected();
            for (LocalRegion d : localRegions) {
                if (d.get() == dst) {
                    return d;
                }
            }
            long[] where = addressOf(dst);
            if (where == null) {
                throw new IllegalArgumentException(device.name() + " memory has no host view and no device address");
            }
            LocalRegion d = new LocalRegion(dst, collected,
                    register(where[0], dst.size(), VerbsContext.LOCAL_WRITE, where[1] != 0));
            localRegions.add(d);
            return d;
        }
    }

    /** Deregisters the localRegions whose buffer the engine dropped. */
    private void dropCollected() {
        for (Object r = collected.poll(); r != null; r = collected.poll()) {
            LocalRegion d = (LocalRegion) r;
            localRegions.remove(d);
            d.region.close();
        }
    }

    private static final class LocalRegion extends WeakReference<DeviceBuffer> {
        final VerbsContext.MemoryRegion region;

        LocalRegion(DeviceBuffer buffer, ReferenceQueue<DeviceBuffer> queue, VerbsContext.MemoryRegion region) {
            super(buffer, queue);
            this.region = region;
        }
    }

    /** {address, 1 when it is CUDA device memory else 0}, or null when this transport cannot name the memory. */
    long[] addressOf(DeviceBuffer buffer) {
        Optional<ByteBuffer> view = device.hostView(buffer);
        if (view.isPresent() && view.get().isDirect()) {
            return new long[] {new Pointer(view.get()).address(), 0};
        }
        OptionalLong gpu = device.deviceAddress(buffer);
        return gpu.isPresent() ? new long[] {gpu.getAsLong(), 1} : null;
    }

    // ---- control: queue pair setup between members ----

    /** Exporter side: a member asks for queue pairs that read this process's pools. */
    private byte[] answer(ControlChannel.Session session, byte[] request) throws IOException {
        ByteBuffer in = ByteBuffer.wrap(request);
        if (request.length == 1 && request[0] == PING) {
            return new byte[] {OK};
        }
        if (request.length == 5 && request[0] == RELEASE) {
            ServedChannel sc = servedChannels.get(in.getInt(1));
            // Only the member that set a channel up may take it down.
            if (sc != null && sc.session == session && forget(sc)) {
                sc.channel.close();
            }
            return new byte[] {OK};
        }
        if (request.length > 0 && request[0] == Pushes.PUSH_CONNECT) {
            return closed ? refusal("the RDMA transport is closing") : pushes.answerConnect(session, in);
        }
        if (request.length == 0 || request[0] != CONNECT) {
            throw new IOException("unknown RDMA control request of " + request.length + " bytes");
        }
        QpSetup remote = QpSetup.decode(in.position(1));
        synchronized (bySession) {
            if (closed) {
                return refusal("the RDMA transport is closing");
            }
            List<ServedChannel> mine = bySession.get(session);
            if (mine != null && mine.size() >= config.channelsPerPeer()) {
                return refusal("a member's connection may hold " + config.channelsPerPeer() + " channels here");
            }
            if (servedChannels.size() >= config.channelsPerPeer() * config.control().maxConnections()) {
                return refusal("this node serves " + servedChannels.size() + " RDMA channels already");
            }
        }
        QpChannel ch;
        try {
            ch = channel(remote.qpns().length, 1, 0, VerbsContext.REMOTE_READ);
        } catch (RuntimeException e) {
            return refusal(e.getMessage());
        }
        try {
            connect(ch, remote);
        } catch (RuntimeException e) {
            ch.close();
            return refusal(e.getMessage());
        }
        ServedChannel sc = new ServedChannel(ch, session);
        boolean first;
        synchronized (bySession) {
            servedChannels.put(ch.qpns[0], sc);
            first = !bySession.containsKey(session);
            bySession.computeIfAbsent(session, k -> new ArrayList<>()).add(sc);
        }
        if (first) { // one action per session, however many channels it sets up and releases
            session.onEnd(() -> endSession(session));
        }
        return QpSetup.of(ch, ctx).encode(OK, new byte[0]);
    }

    /** Forgets a served channel; true when this call did (so it closes it). */
    private boolean forget(ServedChannel sc) {
        synchronized (bySession) {
            if (!servedChannels.remove(sc.channel.qpns[0], sc)) {
                return false;
            }
            List<ServedChannel> mine = bySession.get(sc.session);
            if (mine != null) {
                mine.remove(sc);
            }
            return true;
        }
    }

    /** A member's control connection ended: its queue pairs here go with it. */
    private void endSession(ControlChannel.Session session) {
        List<ServedChannel> mine;
        synchronized (bySession) {
            mine = bySession.remove(session);
            if (mine == null) {
                return;
            }
            mine.forEach(sc -> servedChannels.remove(sc.channel.qpns[0], sc));
        }
        for (ServedChannel sc : mine) {
            closeQuietly(sc.channel);
        }
    }

    static void closeQuietly(AutoCloseable c) {
        try {
            c.close();
        } catch (Exception e) {
            LOG.warn("closing {} failed: {}", c.getClass().getSimpleName(), e.toString());
        }
    }

    /** The words of a refusal. */
    static String why(byte[] answer) {
        return answer.length == 0 ? "an empty answer"
                : new String(answer, 1, answer.length - 1, java.nio.charset.StandardCharsets.UTF_8);
    }

    /** Queue pairs a member set up here, through one control session. */
    private record ServedChannel(QpChannel channel, ControlChannel.Session session) {
    }

    static byte[] refusal(String why) {
        byte[] text = why.getBytes(java.nio.charset.StandardCharsets.UTF_8);
        int n = Math.min(text.length, 1000);
        return ByteBuffer.allocate(1 + n).put(REFUSED).put(text, 0, n).array();
    }

    @Override
    public void evictStale() {
        long idle = TimeUnit.MILLISECONDS.toNanos(config.control().idleTimeoutMillis());
        peers.values().removeIf(p -> p.dropIfIdle(idle));
        synchronized (localRegions) {
            dropCollected();
        }
    }

    /**
     * Stops serving (peers' queue pairs here end with their sessions), waits up to 10 s for running fetches, which
     * see the close within {@value QpChannel#POLL_SLICE_MILLIS} ms and tear their queue pairs down, then deregisters
     * everything and closes the device. Fetches still running after that keep what they use (logged) rather than
     * free memory a NIC may still write; their futures complete when they end. Never throws; idempotent.
     */
    @Override
    public void close() {
        synchronized (life) {
            if (closed) {
                return;
            }
            closed = true; // from here nothing new is made from the context
        }
        if (server != null) {
            server.stop();
        }
        pushes.close();
        fetchers.shutdown(); // queued fetches still run, and fail at once: the transport is closed
        boolean stopped = false;
        try {
            stopped = fetchers.awaitTermination(10, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        for (RdmaPeer p : peers.values()) {
            p.drop();
        }
        peers.clear();
        connector.close();
        List<ControlChannel.Session> sessions;
        synchronized (bySession) {
            sessions = new ArrayList<>(bySession.keySet());
        }
        sessions.forEach(this::endSession);
        List<Served> pools;
        synchronized (served) {
            pools = new ArrayList<>(served.values());
        }
        pools.forEach(Served::end);
        if (!stopped) {
            LOG.warn("RDMA fetches still running 10 s after close: their registrations and the device stay open");
            return;
        }
        synchronized (localRegions) {
            localRegions.forEach(d -> closeQuietly(d.region));
            localRegions.clear();
        }
        synchronized (life) {
            closeQuietly(ctx);
        }
    }
}
