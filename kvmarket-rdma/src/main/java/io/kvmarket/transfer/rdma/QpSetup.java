package io.kvmarket.transfer.rdma;

import java.io.IOException;
import java.nio.ByteBuffer;

/**
 * One side's half of a queue pair setup, as the control requests and answers carry it: its queue pair numbers and
 * first PSNs, its GID, LID and MTU.
 *
 * <pre>
 * op (1) | op's own fields | queue pairs q (1) | MTU (1) | LID (2) | GID (16) | q x (QP number (4), first PSN (4))
 * </pre>
 */
record QpSetup(int[] qpns, int[] psns, byte[] gid, int lid, int mtu) {

    static QpSetup of(QpChannel ch, VerbsContext ctx) {
        return new QpSetup(ch.qpns, ch.psns, ctx.gid, ctx.lid, ctx.mtu);
    }

    QpChannel.Remote remote() {
        return new QpChannel.Remote(qpns, psns, gid, lid);
    }

    byte[] encode(byte op, byte[] fields) {
        ByteBuffer b = ByteBuffer.allocate(1 + fields.length + 4 + 16 + 8 * qpns.length);
        b.put(op).put(fields).put((byte) qpns.length).put((byte) mtu).putShort((short) lid).put(gid);
        for (int i = 0; i < qpns.length; i++) {
            b.putInt(qpns[i]).putInt(psns[i]);
        }
        return b.array();
    }

    /**
     * Reads a half from {@code b}'s position to its end.
     *
     * @throws IOException when it is malformed: no queue pair or more than {@link RdmaConfig#MAX_QUEUE_PAIRS}, an
     *                     MTU code outside 1..5, or a length that does not match
     */
    static QpSetup decode(ByteBuffer b) throws IOException {
        if (b.remaining() < 4 + 16) {
            throw new IOException("queue pair setup of " + b.remaining() + " bytes");
        }
        int q = b.get() & 0xff;
        int mtu = b.get() & 0xff;
        int lid = b.getShort() & 0xffff;
        if (q < 1 || q > RdmaConfig.MAX_QUEUE_PAIRS || mtu < 1 || mtu > 5 || b.remaining() != 16 + 8 * q) {
            throw new IOException("malformed queue pair setup: " + q + " queue pairs, MTU code " + mtu + ", "
                    + b.remaining() + " bytes left");
        }
        byte[] gid = new byte[16];
        b.get(gid);
        int[] qpns = new int[q];
        int[] psns = new int[q];
        for (int i = 0; i < q; i++) {
            qpns[i] = b.getInt();
            psns[i] = b.getInt() & 0xffffff;
        }
        return new QpSetup(qpns, psns, gid, lid, mtu);
    }
}
