package io.kvmarket.transfer.rdma;

import java.security.SecureRandom;

/**
 * Reliable-connection queue pairs to one peer sharing one completion queue: the unit a transfer checks out and
 * uses alone. Created in INIT; {@link #connect} brings it to RTS once the peer's numbers are known. Completions are
 * polled into this object's arrays, so one thread at a time.
 */
final class QpChannel implements AutoCloseable {

    static final int OP_READ = 0;
    static final int OP_WRITE = 1;
    static final int OP_WRITE_WITH_IMM = 2;
    /** Or'ed into an op: segments back to back at the remote end share a work request (one SGE each). */
    static final int MERGE = 0x100;
    /** Work completion statuses and opcodes (enum ibv_wc_status, ibv_wc_opcode) the transport tells apart. */
    static final int WC_SUCCESS = 0;
    static final int WC_REM_ACCESS_ERR = 10;
    static final int WC_RETRY_EXC_ERR = 12;
    static final int WC_RECV_RDMA_WITH_IMM = 129;
    /** Longest single wait on the completion channel, so that a close() is noticed. */
    static final int POLL_SLICE_MILLIS = 100;

    private static final SecureRandom RANDOM = new SecureRandom();

    final long handle;
    final int[] qpns;
    final int[] psns;
    final int sendQueueDepth;
    /** Polled completions: valid up to the count the last {@link #poll} returned. */
    final long[] wrIds;
    final int[] status;
    final int[] opcode;
    final int[] byteLen;
    final int[] imm;
    final int[] qpIndex;
    private boolean closed;

    private QpChannel(long handle, int[] qpns, int sendQueueDepth) {
        this.handle = handle;
        this.qpns = qpns;
        this.sendQueueDepth = sendQueueDepth;
        this.psns = new int[qpns.length];
        for (int i = 0; i < psns.length; i++) {
            psns[i] = RANDOM.nextInt(1 << 24);
        }
        int max = Math.max(16, 2 * qpns.length);
        this.wrIds = new long[max];
        this.status = new int[max];
        this.opcode = new int[max];
        this.byteLen = new int[max];
        this.imm = new int[max];
        this.qpIndex = new int[max];
    }

    /**
     * @param access what the peer may do through these queue pairs ({@link VerbsContext#REMOTE_READ} ...)
     */
    static QpChannel create(VerbsContext ctx, int queuePairs, int sendQueueDepth, int receiveQueueDepth, int access) {
        long[] out = new long[1];
        int[] qpns = new int[queuePairs];
        Verbs.check("create " + queuePairs + " queue pairs", VerbsLib.kvm_rdma_channel_create(ctx.handle, queuePairs,
                sendQueueDepth, receiveQueueDepth, access, out, qpns));
        return new QpChannel(out[0], qpns, sendQueueDepth);
    }

    int queuePairs() {
        return qpns.length;
    }

    /** Brings every queue pair to RTS, connected to the peer's queue pair of the same index. */
    void connect(Remote remote, int mtu, int readDepth, int timeout, int retryCount) {
        if (remote.qpns.length != qpns.length) {
            throw new IllegalArgumentException("peer has " + remote.qpns.length + " queue pairs for our "
                    + qpns.length);
        }
        Verbs.check("connect queue pairs", VerbsLib.kvm_rdma_channel_connect(handle, remote.qpns, remote.gid,
                remote.lid, remote.psns, psns, mtu, readDepth, timeout, retryCount, 7));
    }

    /**
     * Posts {@code count} work requests as one call (one chained post per queue pair).
     *
     * @return the signaled completions to expect
     */
    int post(int op, long wrIdBase, long localBase, int lkey, long remoteBase, int rkey, long[] localOff,
             long[] remoteOff, long[] len, int count) {
        return Verbs.check("post " + count + " work requests",
                VerbsLib.kvm_rdma_post(handle, op, wrIdBase, localBase, lkey, remoteBase, rkey, localOff, remoteOff,
                        len, count, 0));
    }

    /**
     * Waits up to {@code timeoutMillis} for completions.
     *
     * @return how many landed in the arrays, 0 when none came in time
     */
    int poll(int timeoutMillis) {
        int n = VerbsLib.kvm_rdma_poll(handle, wrIds.length, timeoutMillis, wrIds, status, opcode, byteLen, imm,
                qpIndex);
        return n == -6 ? 0 : Verbs.check("poll completions", n);
    }

    /**
     * Waits for completions for at most {@link #POLL_SLICE_MILLIS}, and not past {@code deadlineNanos}
     * (System.nanoTime), so that the caller sees a close or its deadline in time.
     *
     * @return how many landed in the arrays, 0 when none came
     */
    int pollBefore(long deadlineNanos) {
        long left = java.util.concurrent.TimeUnit.NANOSECONDS.toMillis(deadlineNanos - System.nanoTime()) + 1;
        return poll((int) Math.max(0, Math.min(POLL_SLICE_MILLIS, left)));
    }

    /** Moves every queue pair to the error state: what is outstanding completes with flush errors. */
    void fail() {
        VerbsLib.kvm_rdma_channel_fail(handle);
    }

    /** Destroys the queue pairs: no work of them touches memory after this returns. */
    @Override
    public synchronized void close() {
        if (!closed) {
            Verbs.check("destroy queue pairs", VerbsLib.kvm_rdma_channel_destroy(handle));
            closed = true;
        }
    }

    /** The peer's half: its queue pair numbers and first PSNs, its GID and LID. */
    record Remote(int[] qpns, int[] psns, byte[] gid, int lid) {
    }
}
