package io.kvmarket.transfer.rdma;

import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.transfer.PushTransport;
import io.kvmarket.transfer.TransferException;
import io.kvmarket.transfer.TransferFailure;
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
 * PUSH_CONNECT request: PUSH_CONNECT (1) | push id (4) | token (8) | immediates to expect (4) | queue pair setup
 * </pre>
 */
final class Pushes {

    static final byte PUSH_CONNECT = 4;
    private static final Logger LOG = LoggerFactory.getLogger(Pushes.class);
    private static final SecureRandom RANDOM = new SecureRandom();
    private static final int VERSION = 1;
    private static final int WC_RECV_RDMA_WITH_IMM = 129;
    private static final int WC_REM_ACCESS_ERR = 10;
    private static final int WC_RETRY_EXC_ERR = 12;
    private static final int POLL_SLICE_MILLIS = 100;

    private final RdmaTransport transport;
    private final Map<Integer, Target> pending = new ConcurrentHashMap<>();
    private final ScheduledThreadPoolExecutor timer;

    Pushes(RdmaTransport transport, int id) {
        this.transport = transport;
        this.timer = new ScheduledThreadPoolExecutor(1, r -> {
            Thread t = new Thread(r, "kvmarket-rdma-push-timer-" + id);
            t.setDaemon(true);
            return t;
        });
        this.timer.setRemoveOnCancelPolicy(true);
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
        long base = where[0];
        boolean cuda = where[1] != 0;
        List<VerbsContext.MemoryRegion> regions = new ArrayList<>(runs.size());
        try {
            for (long[] r : runs) {
                regions.add(transport.register(base + r[0], r[1] - r[0],
                        VerbsContext.REMOTE_WRITE | VerbsContext.LOCAL_WRITE, cuda));
            }
        } catch (RuntimeException e) {
            regions.forEach(RdmaTransport::closeQuietly);
            throw e;
        }
        long[] addresses = new long[n];
        int[] rkeys = new int[n];
        for (int i = 0; i < n; i++) {
            addresses[i] = base + dstOffsets[i];
            rkeys[i] = regions.get(runOf[i]).rkey;
        }
        Target t;
        do {
            int id = RANDOM.nextInt();
            t = id == 0 ? null : new Target(id, RANDOM.nextLong(), regions, control, addresses, rkeys, lengths.clone());
        } while (t == null || pending.putIfAbsent(t.id, t) != null);
        Target target = t;
        target.timeout = timer.schedule(() -> target.fail("no push landed within " + timeoutMillis + " ms"),
                timeoutMillis, TimeUnit.MILLISECONDS);
        target.deadlineNanos = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMillis);
        return target;
    }

    /** A sender asks for queue pairs into a target: answered on the control server's thread. */
    byte[] answerConnect(ByteBuffer in) throws IOException {
        if (in.remaining() < 1 + 4 + 8 + 4) {
            throw new IOException("push setup of " + in.remaining() + " bytes");
        }
        in.get();
        int id = in.getInt();
        long token = in.getLong();
        int expected = in.getInt();
        QpSetup sender = QpSetup.decode(in);
        Target t = pending.get(id);
        if (t == null || t.token != token) {
            return RdmaTransport.refusal("no push awaits that ticket here (landed, timed out, closed, or never)");
        }
        if (expected < 1 || expected > sender.qpns().length || expected > t.addresses.length) {
            return RdmaTransport.refusal("a push of " + t.addresses.length + " spans over " + sender.qpns().length
                    + " queue pairs cannot end in " + expected + " immediates");
        }
        QpChannel ch = transport.channel(sender.qpns().length, 1, 1, VerbsContext.REMOTE_WRITE);
        try {
            if (!t.connect(ch, expected)) {
                ch.close();
                return RdmaTransport.refusal("that push is already under way or over");
            }
            // Receives first: the immediate of a write must find one, whenever it comes.
            Verbs.check("post receives", VerbsLib.kvm_rdma_post_recv(ch.handle, 0, sender.qpns().length));
            transport.connect(ch, sender);
        } catch (RuntimeException e) {
            t.fail("setting up its queue pairs failed: " + e.getMessage());
            return RdmaTransport.refusal(e.getMessage());
        }
        transport.execute(t::await);
        return QpSetup.of(ch, transport.context()).encode(RdmaTransport.OK, new byte[0]);
    }

    /** A push opened here and not yet landed, failed or closed. */
    private final class Target implements PushTransport.PushTarget {
        final int id;
        final long token;
        final List<VerbsContext.MemoryRegion> regions;
        final long[] addresses;
        final int[] rkeys;
        final long[] lengths;
        final byte[] ticket;
        final CompletableFuture<Void> landed = new CompletableFuture<>();
        volatile long deadlineNanos;
        ScheduledFuture<?> timeout;
        /** Guarded by this. */
        private QpChannel channel;
        private int expected;
        private boolean over;

        Target(int id, long token, List<VerbsContext.MemoryRegion> regions, InetSocketAddress control,
               long[] addresses, int[] rkeys, long[] lengths) {
            this.id = id;
            this.token = token;
            this.regions = regions;
            this.addresses = addresses;
            this.rkeys = rkeys;
            this.lengths = lengths;
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
            return landed;
        }

        synchronized boolean connect(QpChannel ch, int expected) {
            if (over || channel != null) {
                return false;
            }
            this.channel = ch;
            this.expected = expected;
            return true;
        }

        /** Waits for the immediates on the fetch threads, then ends the target either way. */
        void await() {
            QpChannel ch;
            int want;
            synchronized (this) {
                ch = channel;
                want = expected;
            }
            int got = 0;
            String failure = null;
            while (got < want && failure == null) {
                synchronized (this) {
                    if (over) {
                        return; // failed or closed meanwhile: already ended
                    }
                }
                long left = deadlineNanos - System.nanoTime();
                if (left <= 0) {
                    failure = "the push did not land within its timeout";
                    break;
                }
                int k = ch.poll((int) Math.min(POLL_SLICE_MILLIS, TimeUnit.NANOSECONDS.toMillis(left) + 1));
                for (int i = 0; i < k && failure == null; i++) {
                    if (ch.status[i] != QpChannel.WC_SUCCESS) {
                        failure = Verbs.completionStatus(ch.status[i]) + " while receiving";
                    } else if (ch.opcode[i] == WC_RECV_RDMA_WITH_IMM && ch.imm[i] == id) {
                        got++;
                    } else {
                        failure = "a completion that is not this push's immediate (opcode " + ch.opcode[i] + ")";
                    }
                }
            }
            if (failure == null) {
                end(null);
            } else {
                fail(failure);
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

        /** Deregisters the spans and destroys the queue pairs (no write lands after), then completes. */
        private void end(TransferException failure) {
            QpChannel ch;
            synchronized (this) {
                if (over) {
                    return;
                }
                over = true;
                ch = channel;
            }
            pending.remove(id, this);
            if (timeout != null) {
                timeout.cancel(false);
            }
            if (ch != null) {
                if (failure != null) {
                    ch.fail();
                }
                RdmaTransport.closeQuietly(ch);
            }
            regions.forEach(RdmaTransport::closeQuietly);
            if (failure == null) {
                landed.complete(null);
            } else {
                LOG.debug("{}", failure.getMessage());
                landed.completeExceptionally(failure);
            }
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
                        throw new IllegalArgumentException("push ticket span " + i + " of " + lengths[i] + " bytes at 0x"
                                + Long.toHexString(addresses[i]));
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
            int lastCount = n - (n - 1) / window * window;
            int expected = Math.min(ch.queuePairs(), lastCount);
            byte[] fields = ByteBuffer.allocate(16).putInt(ticket.id).putLong(ticket.token).putInt(expected).array();
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
                        last ? QpChannel.OP_WRITE_WITH_IMM : QpChannel.OP_WRITE, start, local.address, local.lkey,
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
            long left = deadline - System.nanoTime();
            if (left <= 0) {
                throw new TransferException(TransferFailure.FAILED, "push to " + ticket.control
                        + " not complete within its deadline");
            }
            int k = ch.poll((int) Math.min(POLL_SLICE_MILLIS, TimeUnit.NANOSECONDS.toMillis(left) + 1));
            for (int i = 0; i < k; i++) {
                int status = ch.status[i];
                if (status != QpChannel.WC_SUCCESS) {
                    // The receiver withdrew its spans (timed out, closed) or stopped answering.
                    throw new TransferException(status == WC_RETRY_EXC_ERR ? TransferFailure.SOURCE_GONE
                            : TransferFailure.FAILED, "push to " + ticket.control + " failed: "
                            + Verbs.completionStatus(status) + (status == WC_REM_ACCESS_ERR
                            ? ": the receiver withdrew its spans (timed out or closed)" : ""));
                }
                got++;
            }
        }
    }

    /** Fails every push still awaited here; the transport is closing. */
    void close() {
        for (Target t : pending.values()) {
            t.fail("the RDMA transport closed");
        }
        timer.shutdownNow();
        try {
            timer.awaitTermination(5, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
