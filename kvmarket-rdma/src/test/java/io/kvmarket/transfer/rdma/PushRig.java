package io.kvmarket.transfer.rdma;

import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.testkit.DeviceBytes;
import io.kvmarket.transfer.PushTransport;
import io.kvmarket.transfer.TransferException;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;

/**
 * Shared rig of the push attacks (abstract: no tests of its own). A receiver (serving), an honest sender and a
 * hostile cluster member (both importing, same cluster secret). The hostile member speaks the wire protocol itself:
 * it holds the secret, so it may send any PUSH_CONNECT bytes and post any work requests on the queue pairs it got.
 */
abstract class PushRig {

    static final int SPAN = 4096;
    static final int SLOTS = 64;

    @TempDir
    Path senderDir;
    @TempDir
    Path receiverDir;
    HostDevice senderDevice;
    HostDevice receiverDevice;
    DeviceBuffer src;
    DeviceBuffer dst;
    RdmaTransport sender;
    RdmaTransport receiver;
    RdmaTransport hostile;
    final byte[] srcBytes = new byte[SLOTS * SPAN];
    final byte[] dstBefore = new byte[SLOTS * SPAN];
    long[] liveBefore;
    final List<AutoCloseable> toClose = new ArrayList<>();

    @BeforeAll
    static void verbs() {
        FakeVerbs.require();
    }

    @BeforeEach
    void setUp() {
        liveBefore = Verbs.liveObjects();
        senderDevice = new HostDevice(senderDir);
        receiverDevice = new HostDevice(receiverDir);
        src = senderDevice.allocate(srcBytes.length);
        dst = receiverDevice.allocate(dstBefore.length);
        new Random(1).nextBytes(srcBytes);
        new Random(2).nextBytes(dstBefore);
        DeviceBytes.HOST.write(src, 0, srcBytes);
        DeviceBytes.HOST.write(dst, 0, dstBefore);
        sender = open(senderDevice, 1, RdmaTransportContractTest.importing());
        receiver = open(receiverDevice, 2, RdmaTransportContractTest.serving());
        hostile = open(senderDevice, 3, RdmaTransportContractTest.importing());
    }

    RdmaTransport open(HostDevice device, long node, RdmaConfig config) {
        RdmaTransport t = RdmaTransportContractTest.open(device, node, config);
        toClose.add(t);
        return t;
    }

    @AfterEach
    void tearDown() {
        for (int i = toClose.size() - 1; i >= 0; i--) {
            try {
                toClose.get(i).close();
            } catch (Exception e) {
                System.err.println("teardown: " + e);
            }
        }
        senderDevice.close();
        receiverDevice.close();
    }

    void assertNothingLeft() {
        for (int i = toClose.size() - 1; i >= 0; i--) {
            try {
                toClose.get(i).close();
            } catch (Exception e) {
                throw new AssertionError(e);
            }
        }
        toClose.clear();
        assertEquals(java.util.Arrays.toString(liveBefore), java.util.Arrays.toString(Verbs.liveObjects()),
                "verbs objects left after every transport closed");
    }

    /** n spans of SPAN bytes at distinct shuffled slots, none back to back when {@code gaps}. */
    static long[][] spans(int n, int seed, boolean gaps) {
        long[] dstOff = new long[n];
        long[] srcOff = new long[n];
        long[] len = new long[n];
        Integer[] slots = new Integer[SLOTS];
        for (int i = 0; i < SLOTS; i++) {
            slots[i] = i;
        }
        java.util.Collections.shuffle(java.util.Arrays.asList(slots), new Random(seed));
        for (int i = 0; i < n; i++) {
            dstOff[i] = (long) slots[i] * SPAN;
            srcOff[i] = (long) (SLOTS - 1 - i) * SPAN;
            len[i] = gaps ? SPAN - 512 : SPAN - (i % 3) * 512L;
        }
        return new long[][] {dstOff, srcOff, len};
    }

    byte[] expected(long[][] s, int n) {
        byte[] want = dstBefore.clone();
        for (int i = 0; i < n; i++) {
            System.arraycopy(srcBytes, (int) s[1][i], want, (int) s[0][i], (int) s[2][i]);
        }
        return want;
    }

    byte[] dstNow() {
        return DeviceBytes.HOST.read(dst, 0, dstBefore.length);
    }

    static TransferException failure(CompletableFuture<Void> f) {
        CompletionException e = assertThrows(CompletionException.class, f::join);
        return assertInstanceOf(TransferException.class, e.getCause());
    }

    /** A ticket's spans start after: version, addr len, 4-byte IPv4, port, id, token, n. */
    static final int SPANS_AT = 2 + 4 + 2 + 4 + 8 + 4;

    /** The ticket with only its first {@code keep} spans (same id, token, receiver). */
    static byte[] truncatedTicket(byte[] ticket, int keep) {
        ByteBuffer in = ByteBuffer.wrap(ticket);
        ByteBuffer out = ByteBuffer.allocate(SPANS_AT + keep * 20);
        out.put(ticket, 0, SPANS_AT - 4).putInt(keep).put(ticket, SPANS_AT, keep * 20);
        assertEquals(in.getInt(SPANS_AT - 4) >= keep, true);
        return out.array();
    }

    /** The hostile member's queue pairs into a push, set up through the receiver's control server. */
    final class HostileChannel implements AutoCloseable {
        final QpChannel ch;
        final Pushes.Ticket ticket;
        final byte[] answer;

        /** Claims the ticket's own span count. */
        HostileChannel(byte[] ticketBytes, int queuePairs) throws IOException {
            this(ticketBytes, queuePairs, null, null);
        }

        /** Claims {@code spans} spans (null: the ticket's), and another push id when {@code overrideId} is set. */
        HostileChannel(byte[] ticketBytes, int queuePairs, Integer spans, Integer overrideId) throws IOException {
            this.ticket = Pushes.Ticket.decode(ticketBytes);
            this.ch = hostile.channel(queuePairs, 16, 0, 0);
            byte[] fields = ByteBuffer.allocate(20).putInt(overrideId != null ? overrideId : ticket.id())
                    .putLong(ticket.token()).putInt(spans != null ? spans : ticket.lengths().length).putInt(16)
                    .array();
            this.answer = hostile.peer(ticket.control()).call(QpSetup.of(ch, hostile.context())
                    .encode(Pushes.PUSH_CONNECT, fields));
            if (accepted()) {
                hostile.connect(ch, QpSetup.decode(ByteBuffer.wrap(answer).position(1)));
            }
        }

        boolean accepted() {
            return answer.length > 0 && answer[0] == RdmaTransport.OK;
        }

        /** Writes source bytes at srcOff[i] to (addr[i], rkey[i]) on queue pair {@code qp}; imm on the last when set. */
        int write(int qp, VerbsContext.MemoryRegion local, long[] srcOff, long[] addr, int[] rkeys, long[] len,
                  boolean withImm, int imm) {
            // post_keyed spreads count WRs over min(count, nqp) QPs; to aim at one QP we use a 1-QP channel.
            return Verbs.check("hostile post", VerbsLib.kvm_rdma_post_keyed(ch.handle,
                    withImm ? QpChannel.OP_WRITE_WITH_IMM : QpChannel.OP_WRITE, 0, local.address, local.lkey, rkeys,
                    srcOff, addr, len, srcOff.length, imm));
        }

        /** Waits for {@code n} send completions; the statuses. */
        int[] awaitSends(int n) {
            int[] st = new int[n];
            int got = 0;
            long deadline = System.nanoTime() + 20_000_000_000L;
            while (got < n && System.nanoTime() < deadline) {
                int k = ch.poll(100);
                for (int i = 0; i < k && got < n; i++) {
                    st[got++] = ch.status[i];
                }
            }
            if (got < n) {
                throw new AssertionError("only " + got + " of " + n + " hostile sends completed");
            }
            return st;
        }

        @Override
        public void close() {
            ch.close();
        }
    }

    /** The hostile member's registration of the sender device's {@code src} for local reads. */
    VerbsContext.MemoryRegion hostileSource() {
        long[] where = hostile.addressOf(src);
        VerbsContext.MemoryRegion r = hostile.register(where[0], src.size(), VerbsContext.LOCAL_WRITE, false);
        toClose.add(toClose.indexOf(hostile) + 1, r); // closed before the hostile transport
        return r;
    }

    PushTransport.PushTarget expect(long[][] s, int n, long timeoutMillis) {
        return receiver.expectPush(dst, java.util.Arrays.copyOf(s[0], n), java.util.Arrays.copyOf(s[2], n),
                timeoutMillis);
    }
}
