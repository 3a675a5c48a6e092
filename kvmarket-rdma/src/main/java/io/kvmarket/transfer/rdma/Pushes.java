package io.kvmarket.transfer.rdma;

import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.transfer.PushTransport;
import io.kvmarket.transfer.TransferException;
import io.kvmarket.transfer.TransferFailure;
import io.kvmarket.transfer.tcp.ControlChannel;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.UnknownHostException;
import java.nio.ByteBuffer;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.ScheduledThreadPoolExecutor;
import java.util.concurrent.TimeUnit;

/**
 * The RDMA transport's pushes: RDMA WRITE with immediate from a sender's memory into spans a receiver opened for
 * that one push. The receiver registers each run of its destination spans on its own, for remote write, and hands
 * out a ticket; the sender sets up queue pairs to the receiver through the receiver's control server (proving both
 * membership and the ticket's token), writes every span with one chained post per queue pair, and the last write of
 * each queue pair carries the push's id as its immediate. RC delivers a queue pair's writes in order, so when the
 * receiver has seen the immediate on every queue pair the sender used, every byte has landed. The spans are
 * deregistered as soon as the push lands, fails or times out.
 *
 * <pre>
 * ticket: version 1 (1) | address length 4 or 16 (1) | control address | control port (2) | push id (4) | token (8)
 *         | spans n (4) | n x (address (8), rkey (4), length (8))
 * PUSH_CONNECT request: PUSH_CONNECT (1) | push id (4) | token (8) | spans (4) | the sender's send queue depth (4)
 *                       | queue pair setup
 * </pre>
 */
final class Pushes {

    static final byte PUSH_CONNECT = 4;
    private static final Logger LOG = LoggerFactory.getLogger(Pushes.class);
    private static final SecureRandom RANDOM = new SecureRandom();
    private static final int VERSION = 1;
    /** Pushes under way at once on one receiver: each has a thread waiting for its immediates. */
    static final int MAX_CONNECTED_PUSHES = 64;

    private final RdmaTransport transport;
    private final Map<Integer, Target> pending = new ConcurrentHashMap<>();
    /** Pushes under way per member connection, guarded by this. */
    private final Map<ControlChannel.Session, Integer> bySession = new java.util.IdentityHashMap<>();
    private final ScheduledThreadPoolExecutor timer;
    /** One thread per push under way waits for its immediates, apart from the transport's fetches. */
    private final java.util.concurrent.ThreadPoolExecutor waiters;

    Pushes(RdmaTransport transport, int id) {
        this.transport = transport;
        this.timer = new ScheduledThreadPoolExecutor(1, r -> {
            Thread t = new Thread(r, "kvmarket-rdma-push-timer-" + id);
            t.setDaemon(true);
            return t;
        });
        this.timer.setRemoveOnCancelPolicy(true);
        java.util.concurrent.atomic.AtomicInteger threads = new java.util.concurrent.atomic.AtomicInteger();
        this.waiters = new java.util.concurrent.ThreadPoolExecutor(0, MAX_CONNECTED_PUSHES, 30, TimeUnit.SECONDS,
                new java.util.concurrent.SynchronousQueue<>(), r -> {
                    Thread t = new Thread(r, "kvmarket-rdma-push-wait-" + id + "-" + threads.incrementAndGet());
                    t.setDaemon(true);
                    return t;
                });
    }

    // ---- receiver ----

    PushTransport.PushTarget expect(DeviceBuffer dst, long[] dstOffsets, long[] lengths, long timeoutMillis,
                                    InetSocketAddress control) {
        if (dstOffsets.length != lengths.length || dstOffsets.length == 0) {
            throw new IllegalArgumentException(dstOffsets.length + " offsets and " + lengths.length
                    + " lengths: a push needs as many of each, at least one");
        }
        if (timeoutMillis < 1) {
            throw new IllegalArgumentException("timeout " + timeoutMillis + " ms");
        }
        int n = dstOffsets.length;
        Integer[] order = new Integer[n];
        for (int i = 0; i < n; i++) {
            if (lengths[i] <= 0 || lengths[i] > Integer.MAX_VALUE || dstOffsets[i] < 0
                    || dstOffsets[i] > dst.size() - lengths[i]) {
                throw new IllegalArgumentException("span " + i + " [" + dstOffsets[i] + ", +" + lengths[i]
                        + ") is empty, too long, or outside the destination of " + dst.size() + " bytes");
            }
            order[i] = i;
        }
        Arrays.sort(order, (a, b) -> Long.compare(dstOffsets[a], dstOffsets[b]));
        // Runs of back-to-back spans, each registered on its own: the sender reaches these bytes and no others.
        List<long[]> runs = new ArrayList<>(); // {start, end}
        int[] runOf = new int[n];
        for (int k = 0; k < n; k++) {
            int i = order[k];
            long start = dstOffsets[i];
            long end = start + lengths[i];
            long[] last = runs.isEmpty() ? null : runs.get(runs.size() - 1);
            if (last != null && start < last[1]) {
                throw new IllegalArgumentException("span " + i + " overlaps another at destination byte " + start);
            }
            if (last != null && start == last[1]) {
                last[1] = end;
            } else {
                runs.add(new long[] {start, end});
            }
            runOf[i] = runs.size() - 1;
        }
        long[] where = transport.addressOf(dst);
        if (where == null) {
            throw new IllegalArgumentException("the push destination's memory has no host view and no device address");
        }
        // Made, registered, listed and timed as one step that close() waits for: nothing of it outlives the device.
        return transport.whileOpen(() -> {
            VerbsContext domain = transport.context().openDomain();
            List<VerbsContext.MemoryRegion> regions = new ArrayList<>(runs.size());
            try {
                for (long[] r : runs) {
                    regions.add(domain.register(where[0] + r[0], r[1] - r[0],
                            VerbsContext.REMOTE_WRITE | VerbsContext.LOCAL_WRITE, where[1] != 0));
                }
            } catch (RuntimeException e) {
                regions.forEach(RdmaTransport::closeQuietly);
                RdmaTransport.closeQuietly(domain);
                throw e;
            }
            long[] addresses = new long[n];
            int[] rkeys = new int[n];
            for (int i = 0; i < n; i++) {
                addresses[i] = where[0] + dstOffsets[i];
                rkeys[i] = regions.get(runOf[i]).rkey;
            }
            Target t;
            do {
                int id = RANDOM.nextInt();
                t = id == 0 ? null : new Target(id, RANDOM.nextLong(), domain, regions, control, addresses, rkeys,
                        lengths.clone());
            } while (t == null || pending.putIfAbsent(t.id, t) != null);
            Target target = t;
            target.deadlineNanos = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMillis);
            target.timeout = timer.schedule(() -> target.fail("no push landed within " + timeoutMillis + " ms"),
                    timeoutMillis, TimeUnit.MILLISECONDS);
            return target;
        });
    }

    /**
     * A sender asks for queue pairs into a target: answered on the control server's thread, which owns the new queue
     * pairs until a wait thread takes them over.
     */
    byte[] answerConnect(ControlChannel.Session session, ByteBuffer in) throws IOException {
        if (in.remaining() < 1 + 4 + 8 + 4 + 4) {
            throw new IOException("push setup of " + in.remaining() + " bytes");
        }
        in.get();
        int id = in.getInt();
        long token = in.getLong();
        int spans = in.getInt();
        int depth = in.getInt();
        QpSetup sender = QpSetup.decode(in);
        Target t = pending.get(id);
        if (t == null || t.token != token) {
            return RdmaTransport.refusal("no push awaits that ticket here (landed, timed out, closed, or never)");
        }
        if (spans != t.addresses.length || depth < 1) {
            return RdmaTransport.refusal("this push has " + t.addresses.length + " spans, not " + spans
                    + " (send queue depth " + depth + ")");
        }
        // The immediates to wait for, worked out here: the last window's runs, one per queue pair it used.
        long window = (long) sender.qpns().length * depth;
        long lastCount = spans - (spans - 1) / window * window;
        int expected = (int) Math.min(sender.qpns().length, lastCount);
        synchronized (this) {
            int mine = bySession.getOrDefault(session, 0);
            if (mine >= transport.config().channelsPerPeer() || waiters.getActiveCount() >= MAX_CONNECTED_PUSHES) {
                return RdmaTransport.refusal("too many pushes under way (" + mine + " from this member)");
            }
            bySession.merge(session, 1, Integer::sum);
        }
        try {
            QpChannel ch = t.claim(sender.qpns().length, expected);
            if (ch == null) {
                released(session);
                return RdmaTransport.refusal("that push is already under way or over");
            }
            try {
                // Receives first: the immediate of a write must find one, whenever it comes.
                Verbs.check("post receives", VerbsLib.kvm_rdma_post_recv(ch.handle, 0, sender.qpns().length));
                transport.connect(ch, sender);
                if (t.isOver()) {
                    throw new IllegalStateException("closed meanwhile");
                }
                waiters.execute(() -> {
                    try {
                        t.await();
                    } finally {
                        released(session);
                    }
                });
            } catch (RuntimeException e) { // also a rejected wait: too many at once
                t.fail("setting up its queue pairs failed: " + e.getMessage());
                t.teardown();
                released(session);
                return RdmaTransport.refusal(e.getMessage());
            }
            return QpSetup.of(ch, t.domain).encode(RdmaTransport.OK, new byte[0]);
        } catch (RuntimeException e) {
            released(session);
            throw e;
        }
    }

    private synchronized void released(ControlChannel.Session session) {
        bySession.computeIfPresent(session, (k, v) -> v > 1 ? v - 1 : null);
    }

    /**
     * A push opened here. Its queue pairs and protection domain are torn down by exactly one thread: the one that
     * claimed them (setting up, then waiting), or, when no sender came, whoever ends the target. Others only fail
     * the queue pairs, which wakes the waiter.
     */
    private final class Target implements PushTransport.PushTarget {
        final int id;
        final long token;
        final VerbsContext domain;
        final List<VerbsContext.MemoryRegion> regions;
        final long[] addresses;
        final byte[] ticket;
        final CompletableFuture<Void> landed = new CompletableFuture<>();
        volatile long deadlineNanos;
        volatile ScheduledFuture<?> timeout;
        /** Guarded by this. */
        private QpChannel channel;
        private int expected;
        private boolean over;
        private boolean torn;

        Target(int id, long token, VerbsContext domain, List<VerbsContext.MemoryRegion> regions,
               InetSocketAddress control, long[] addresses, int[] rkeys, long[] lengths) {
            this.id = id;
            this.token = token;
            this.domain = domain;
            this.regions = regions;
            this.addresses = addresses;
            byte[] addr = control.getAddress().getAddress();
            ByteBuffer b = ByteBuffer.allocate(2 + addr.length + 2 + 4 + 8 + 4 + addresses.length * 20);
            b.put((byte) VERSION).put((byte) addr.length).put(addr).putShort((short) control.getPort()).putInt(id)
                    .putLong(token).putInt(addresses.length);
            for (int i = 0; i < addresses.length; i++) {
                b.putLong(addresses[i]).putInt(rkeys[i]).putLong(lengths[i]);
            }
            this.ticket = b.array();
        }

        @Override
        public byte[] ticket() {
            return ticket.clone();
        }

        @Override
        public CompletableFuture<Void> landed() {
            return landed.copy(); // a caller completing its copy changes nothing here
        }

        /** Queue pairs in this push's domain, owned by the caller from now on; null when it is taken or over. */
        synchronized QpChannel claim(int queuePairs, int expected) {
            if (over || channel != null) {
                return null;
            }
            this.channel = transport.whileOpen(() -> QpChannel.create(domain, queuePairs, 1, 1,
                    VerbsContext.REMOTE_WRITE));
            this.expected = expected;
            return channel;
        }

        synchronized boolean isOver() {
            return over;
        }

        /** On the wait thread: the immediates, then the end either way, then the teardown. */
        void await() {
            try {
                int got = 0;
                String failure = null;
                while (got < expected && failure == null && !isOver()) {
                    if (deadlineNanos - System.nanoTime() <= 0) {
                        failure = "the push did not land within its timeout";
                        break;
                    }
                    int k = channel.pollBefore(deadlineNanos);
                    for (int i = 0; i < k && failure == null; i++) {
                        if (channel.status[i] != QpChannel.WC_SUCCESS) {
                            failure = Verbs.completionStatus(channel.status[i]) + " while receiving";
                        } else if (channel.opcode[i] == QpChannel.WC_RECV_RDMA_WITH_IMM && channel.imm[i] == id) {
                            got++;
                        } else {
                            failure = "a completion that is not this push's immediate (opcode " + channel.opcode[i]
                                    + ")";
                        }
                    }
                }
                if (failure == null && got == expected) {
                    end(null);
                } else if (failure != null) {
                    fail(failure);
                }
            } finally {
                teardown();
            }
        }

        void fail(String why) {
            end(new TransferException(TransferFailure.FAILED, "push " + Integer.toHexString(id) + ": " + why));
        }

        @Override
        public void close() {
            end(new TransferException(TransferFailure.FAILED, "push " + Integer.toHexString(id)
                    + ": closed by the receiver before it landed"));
        }

        /** Closes the spans to writes at once and completes; the queue pairs' owner tears them down. */
        private void end(TransferException failure) {
            QpChannel claimed;
            synchronized (this) {
                if (over) {
                    return;
                }
                over = true;
                claimed = channel;
                if (claimed != null && failure != null && !torn) {
                    claimed.fail(); // wakes its owner, who tears it down (under this lock: not before this returns)
                }
            }
            pending.remove(id, this);
            ScheduledFuture<?> t = timeout;
            if (t != null) {
                t.cancel(false);
            }
            regions.forEach(RdmaTransport::closeQuietly);
            if (claimed == null) {
                teardown(); // no sender came: nobody else owns anything of this push
            }
            if (failure == null) {
                landed.complete(null);
            } else {
                LOG.debug("{}", failure.getMessage());
                landed.completeExceptionally(failure);
            }
        }

        /** Destroys the queue pairs and the domain, once; by their owner, after the spans were deregistered. */
        void teardown() {
            synchronized (this) { // with end()'s fail(): never destroyed under it
                if (torn) {
                    return;
                }
                torn = true;
                if (channel != null) {
                    RdmaTransport.closeQuietly(channel);
                }
            }
            regions.forEach(RdmaTransport::closeQuietly);
            RdmaTransport.closeQuietly(domain);
        }
    }

    // ---- sender ----

    /** A parsed ticket. */
    record Ticket(InetSocketAddress control, int id, long token, long[] addresses, int[] rkeys, long[] lengths) {

        /**
         * @throws IllegalArgumentException when the bytes are not a ticket of this version
         */
        static Ticket decode(byte[] bytes) {
            try {
                ByteBuffer b = ByteBuffer.wrap(bytes);
                if (b.get() != VERSION) {
                    throw new IllegalArgumentException("not a version " + VERSION + " RDMA push ticket");
                }
                int addrLen = b.get();
                if (addrLen != 4 && addrLen != 16) {
                    throw new IllegalArgumentException("push ticket with a " + addrLen + "-byte address");
                }
                byte[] addr = new byte[addrLen];
                b.get(addr);
                int port = b.getShort() & 0xffff;
                int id = b.getInt();
                long token = b.getLong();
                int n = b.getInt();
                if (n < 1 || b.remaining() != (long) n * 20) {
                    throw new IllegalArgumentException("push ticket of " + n + " spans in " + bytes.length + " bytes");
                }
                long[] addresses = new long[n];
                int[] rkeys = new int[n];
                long[] lengths = new long[n];
                for (int i = 0; i < n; i++) {
                    addresses[i] = b.getLong();
                    rkeys[i] = b.getInt();
                    lengths[i] = b.getLong();
                    if (lengths[i] <= 0 || lengths[i] > Integer.MAX_VALUE || addresses[i] < 0
                            || addresses[i] + lengths[i] < 0) {
                        throw new IllegalArgumentException("push ticket span " + i + " of " + lengths[i]
                                + " bytes at 0x" + Long.toHexString(addresses[i]));
                    }
                }
                InetAddress host = InetAddress.getByAddress(addr);
                if (port == 0 || host.isAnyLocalAddress() || host.isMulticastAddress()) {
                    throw new IllegalArgumentException("push ticket names no one receiver: " + host.getHostAddress()
                            + ":" + port);
                }
                return new Ticket(new InetSocketAddress(host, port), id, token, addresses, rkeys, lengths);
            } catch (java.nio.BufferUnderflowException | UnknownHostException e) {
                throw new IllegalArgumentException("truncated or malformed RDMA push ticket", e);
            }
        }
    }

    /**
     * Writes every span on one channel set up for this push: a window at a time when the spans outnumber what the
     * queues hold, plain writes first, the last window's last write per queue pair with the immediate.
     */
    void push(Ticket ticket, VerbsContext.MemoryRegion local, long[] srcOffsets) {
        RdmaConfig config = transport.config();
        int n = srcOffsets.length;
        QpChannel ch = transport.channel(config.queuePairs(), config.sendQueueDepth(), 0, 0);
        try {
            int window = ch.queuePairs() * ch.sendQueueDepth;
            // The receiver works out the immediates to expect from the span count and the queues' shape.
            byte[] fields = ByteBuffer.allocate(20).putInt(ticket.id).putLong(ticket.token).putInt(n)
                    .putInt(ch.sendQueueDepth).array();
            byte[] answer;
            try {
                answer = transport.peer(ticket.control).call(QpSetup.of(ch, transport.context())
                        .encode(PUSH_CONNECT, fields));
            } catch (IOException e) {
                throw new TransferException(TransferFailure.UNREACHABLE, "cannot reach the push's receiver at "
                        + ticket.control + ": " + e.getMessage(), e);
            }
            if (answer.length == 0 || answer[0] != RdmaTransport.OK) {
                throw new TransferException(TransferFailure.UNREACHABLE, ticket.control + " refused the push: "
                        + RdmaTransport.why(answer));
            }
            QpSetup receiver;
            try {
                receiver = QpSetup.decode(ByteBuffer.wrap(answer).position(1));
            } catch (IOException e) {
                throw new TransferException(TransferFailure.MALFORMED, "push setup answer: " + e.getMessage(), e);
            }
            transport.connect(ch, receiver);
            long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(config.fetchDeadlineMillis());
            for (int start = 0; start < n; start += window) {
                int count = Math.min(window, n - start);
                boolean last = start + count == n;
                int runs = Verbs.check("post " + count + " writes", VerbsLib.kvm_rdma_post_keyed(ch.handle,
                        (last ? QpChannel.OP_WRITE_WITH_IMM : QpChannel.OP_WRITE) | QpChannel.MERGE, start,
                        local.address, local.lkey,
                        Arrays.copyOfRange(ticket.rkeys, start, start + count),
                        Arrays.copyOfRange(srcOffsets, start, start + count),
                        Arrays.copyOfRange(ticket.addresses, start, start + count),
                        Arrays.copyOfRange(ticket.lengths, start, start + count), count, ticket.id));
                awaitSends(ch, runs, deadline, ticket);
            }
        } catch (RuntimeException e) {
            ch.fail();
            throw e;
        } finally {
            RdmaTransport.closeQuietly(ch);
        }
    }

    private void awaitSends(QpChannel ch, int runs, long deadline, Ticket ticket) {
        for (int got = 0; got < runs; ) {
            if (transport.isClosed()) {
                throw new TransferException(TransferFailure.FAILED, "RDMA transport closed");
            }
            if (deadline - System.nanoTime() <= 0) {
                throw new TransferException(TransferFailure.FAILED, "push to " + ticket.control
                        + " not complete within its deadline");
            }
            int k = ch.pollBefore(deadline);
            for (int i = 0; i < k; i++) {
                int status = ch.status[i];
                if (status != QpChannel.WC_SUCCESS) {
                    // The receiver withdrew its spans (timed out, closed) or stopped answering.
                    throw new TransferException(status == QpChannel.WC_RETRY_EXC_ERR ? TransferFailure.SOURCE_GONE
                            : TransferFailure.FAILED, "push to " + ticket.control + " failed: "
                            + Verbs.completionStatus(status) + (status == QpChannel.WC_REM_ACCESS_ERR
                            ? ": the receiver withdrew its spans (timed out or closed)" : ""));
                }
                got++;
            }
        }
    }

    /**
     * Fails every push still awaited here and waits up to 5 s for their wait threads, which tear their queue pairs
     * down; the transport is closing.
     */
    void close() {
        for (Target t : pending.values()) {
            t.fail("the RDMA transport closed");
        }
        timer.shutdownNow();
        waiters.shutdown();
        try {
            timer.awaitTermination(5, TimeUnit.SECONDS);
            waiters.awaitTermination(5, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
