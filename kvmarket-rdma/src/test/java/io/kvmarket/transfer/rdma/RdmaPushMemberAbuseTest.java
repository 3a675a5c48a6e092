package io.kvmarket.transfer.rdma;

import io.kvmarket.transfer.PushTransport;
import io.kvmarket.transfer.TransferException;
import io.kvmarket.transfer.TransferFailure;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.CountDownLatch;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** A hostile cluster member (it holds the secret) against a receiver's pushes. */
@Timeout(120)
class RdmaPushMemberAbuseTest extends PushRig {

    /**
     * The sender chooses how many immediates the receiver waits for; a ticket re-encoded with fewer spans (same id and
     * token) makes the sender announce fewer, write only those, and the receiver reports the whole push as landed.
     */
    @Test
    void aTicketCutToOneSpanIsRefusedAndLandsNothing() {
        long[][] s = spans(8, 11, true);
        PushTransport.PushTarget target = expect(s, 8, 1000);
        byte[] cut = truncatedTicket(target.ticket(), 1);
        CompletionException refused = assertThrows(CompletionException.class,
                () -> sender.push(cut, src, new long[] {s[1][0]}).join());
        assertTrue(refused.getCause().getMessage().contains("this push has 8 spans, not 1"),
                refused.getCause().getMessage());
        assertThrows(CompletionException.class, () -> target.landed().join(), "it times out: nothing landed");
        assertArrayEquals(dstBefore, dstNow(), "no span written");
    }

    /** An immediate carrying another number than the push's id fails the push. */
    @Test
    void anImmediateOfAnotherPushIdFailsThePush() throws Exception {
        long[][] s = spans(1, 12, true);
        PushTransport.PushTarget target = expect(s, 1, 10_000);
        VerbsContext.MemoryRegion local = hostileSource();
        try (HostileChannel h = new HostileChannel(target.ticket(), 1)) {
            assertTrue(h.accepted(), RdmaTransport.why(h.answer));
            h.write(0, local, new long[] {s[1][0]}, new long[] {h.ticket.addresses()[0]},
                    new int[] {h.ticket.rkeys()[0]}, new long[] {s[2][0]}, true, h.ticket.id() + 1);
            h.awaitSends(1);
            TransferException e = failure(target.landed());
            assertTrue(e.getMessage().contains("not this push's immediate"), e.getMessage());
        }
    }

    /** Each push has its own protection domain: the queue pairs of one push reach no span of another. */
    @Test
    void theQueuePairsOfOnePushReachNoSpanOfAnother() throws Exception {
        long[][] s = spans(2, 13, true);
        PushTransport.PushTarget a = receiver.expectPush(dst, new long[] {s[0][0]}, new long[] {s[2][0]}, 10_000);
        PushTransport.PushTarget b = receiver.expectPush(dst, new long[] {s[0][1]}, new long[] {s[2][1]}, 10_000);
        Pushes.Ticket tb = Pushes.Ticket.decode(b.ticket());
        VerbsContext.MemoryRegion local = hostileSource();
        try (HostileChannel h = new HostileChannel(a.ticket(), 1)) {
            assertTrue(h.accepted(), RdmaTransport.why(h.answer));
            h.write(0, local, new long[] {s[1][1]}, new long[] {tb.addresses()[0]}, new int[] {tb.rkeys()[0]},
                    new long[] {tb.lengths()[0]}, false, 0);
            int status = h.awaitSends(1)[0];
            assertFalse(status == QpChannel.WC_SUCCESS, "push A's queue pairs wrote B's span");
            assertArrayEquals(dstBefore, dstNow(), "nothing of B's span, nor anything else, was reached");
            a.close(); // its queue pairs are in error now: ending it from this thread only fails them
            b.close();
        }
    }

    /** Two senders race one ticket: one is refused, the other lands byte for byte. */
    @Test
    void twoSendersRacingOneTicket() throws Exception {
        RdmaTransport second = open(senderDevice, 4, RdmaTransportContractTest.importing());
        for (int round = 0; round < 20; round++) {
            resetDestination();
            long[][] s = spans(16, 100 + round, false);
            PushTransport.PushTarget target = expect(s, 16, 10_000);
            byte[] ticket = target.ticket();
            CountDownLatch go = new CountDownLatch(1);
            List<CompletableFuture<Void>> pushes = new ArrayList<>();
            for (RdmaTransport t : List.of(sender, second)) {
                pushes.add(CompletableFuture.supplyAsync(() -> {
                    try {
                        go.await();
                    } catch (InterruptedException e) {
                        throw new RuntimeException(e);
                    }
                    return t.push(ticket, src, s[1]);
                }).thenCompose(f -> f));
            }
            go.countDown();
            int ok = 0;
            for (CompletableFuture<Void> f : pushes) {
                try {
                    f.join();
                    ok++;
                } catch (CompletionException e) {
                    assertEquals(TransferFailure.UNREACHABLE, ((TransferException) e.getCause()).failure(),
                            e.getMessage());
                }
            }
            assertEquals(1, ok, "exactly one sender of a ticket gets through");
            target.landed().join();
            assertArrayEquals(expected(s, 16), dstNow());
        }
    }

    private void resetDestination() {
        io.kvmarket.testkit.DeviceBytes.HOST.write(dst, 0, dstBefore);
    }

    /** Bogus PUSH_CONNECTs (wrong token, unknown id, bad counts, replays) are refused and leave nothing. */
    @Test
    void bogusPushConnectsAreRefusedAndLeaveNothing() throws Exception {
        long[][] s = spans(4, 14, true);
        PushTransport.PushTarget target = expect(s, 4, 10_000);
        byte[] ticket = target.ticket();
        long[] live = Verbs.liveObjects();
        for (int i = 0; i < 50; i++) {
            byte[] wrongToken = ticket.clone();
            wrongToken[2 + 4 + 2 + 4 + (i % 8)] ^= (byte) (1 + i);
            try (HostileChannel h = new HostileChannel(wrongToken, 1)) {
                assertFalse(h.accepted());
            }
            try (HostileChannel h = new HostileChannel(ticket, 1, null, i * 7919 + 1)) {
                assertFalse(h.accepted());
            }
        }
        for (int spans : new int[] {0, -1, 5, Integer.MAX_VALUE, Integer.MIN_VALUE}) {
            try (HostileChannel h = new HostileChannel(ticket, 4, spans, null)) {
                assertFalse(h.accepted(), "a claim of " + spans + " spans");
            }
        }
        // The hostile channels above were closed; only the receiver's side could be left.
        assertArrayEquals(live, Verbs.liveObjects(), "refused setups leave nothing");
        try (HostileChannel h = new HostileChannel(ticket, 1)) {
            assertTrue(h.accepted(), RdmaTransport.why(h.answer));
            try (HostileChannel again = new HostileChannel(ticket, 1)) {
                assertFalse(again.accepted(), "a second setup of one ticket");
            }
            // Ended by its own immediate (closing it from here would race the await thread's poll: see
            // RdmaPushTeardownRaceTest).
            VerbsContext.MemoryRegion local = hostileSource();
            h.write(0, local, new long[] {0}, new long[] {h.ticket.addresses()[0]}, new int[] {h.ticket.rkeys()[0]},
                    new long[] {h.ticket.lengths()[0]}, true, h.ticket.id());
            h.awaitSends(1);
            target.landed().join();
        }
        // Garbage after PUSH_CONNECT: the receiver must stay up for honest pushes.
        Pushes.Ticket t = Pushes.Ticket.decode(ticket);
        for (byte[] junk : List.of(new byte[] {Pushes.PUSH_CONNECT}, new byte[] {Pushes.PUSH_CONNECT, 1, 2, 3},
                ByteBuffer.allocate(1 + 16 + 20).put(Pushes.PUSH_CONNECT).array())) {
            try {
                byte[] answer = hostile.peer(t.control()).call(junk);
                assertNotEquals(RdmaTransport.OK, answer.length == 0 ? -1 : answer[0]);
            } catch (java.io.IOException e) {
                // the server dropped the connection: fine
            }
        }
        long[][] s2 = spans(4, 15, true);
        resetDestination();
        PushTransport.PushTarget honest = expect(s2, 4, 10_000);
        sender.push(honest.ticket(), src, s2[1]).join();
        honest.landed().join();
        assertArrayEquals(expected(s2, 4), dstNow());
        assertNothingLeft();
    }

    /**
     * A member that connects to pushes and writes nothing holds at most channelsPerPeer of them (each with a thread
     * waiting for its immediates); an honest sender's push beside them lands, and its landed() says so.
     */
    @Test
    void stalledPushesOfOneMemberAreCappedAndAnHonestOneLands() throws Exception {
        int cap = RdmaConfig.of(RdmaRig.control(true)).channelsPerPeer();
        List<PushTransport.PushTarget> stalled = new ArrayList<>();
        List<HostileChannel> channels = new ArrayList<>();
        for (int i = 0; i <= cap; i++) {
            PushTransport.PushTarget t = receiver.expectPush(dst, new long[] {(long) i * SPAN},
                    new long[] {SPAN - 512}, 30_000);
            stalled.add(t);
            HostileChannel h = new HostileChannel(t.ticket(), 1);
            assertEquals(i < cap, h.accepted(), "push " + i + ": " + RdmaTransport.why(h.answer));
            channels.add(h);
        }
        long[][] s = spans(4, 17, true);
        long[] dstOff = new long[4];
        long[] srcOff = new long[4];
        long[] len = new long[4];
        for (int i = 0; i < 4; i++) {
            dstOff[i] = (long) (40 + i) * SPAN; // clear of the stalled spans
            srcOff[i] = s[1][i];
            len[i] = SPAN;
        }
        PushTransport.PushTarget honest = receiver.expectPush(dst, dstOff, len, 10_000);
        sender.push(honest.ticket(), src, srcOff).join();
        honest.landed().join();
        byte[] now = dstNow();
        for (int i = 0; i < 4; i++) {
            assertTrue(Arrays.equals(now, (int) dstOff[i], (int) (dstOff[i] + len[i]), srcBytes, (int) srcOff[i],
                    (int) (srcOff[i] + len[i])), "span " + i + " landed");
        }
        stalled.forEach(PushTransport.PushTarget::close);
        channels.forEach(HostileChannel::close);
    }
    /** Replayed setups of a push under way are refused without counting against the member's pushes under way. */
    @Test
    void refusedReplaysDoNotUseUpAMembersPushes() throws Exception {
        int cap = RdmaConfig.of(RdmaRig.control(true)).channelsPerPeer();
        List<PushTransport.PushTarget> targets = new ArrayList<>();
        List<HostileChannel> channels = new ArrayList<>();
        for (int i = 0; i < cap; i++) {
            targets.add(receiver.expectPush(dst, new long[] {(long) i * SPAN}, new long[] {SPAN}, 30_000));
        }
        HostileChannel first = new HostileChannel(targets.get(0).ticket(), 1);
        assertTrue(first.accepted(), RdmaTransport.why(first.answer));
        channels.add(first);
        for (int replay = 0; replay < 3 * cap; replay++) {
            try (HostileChannel again = new HostileChannel(targets.get(0).ticket(), 1)) {
                assertFalse(again.accepted(), "a replayed setup");
            }
        }
        for (int i = 1; i < cap; i++) {
            HostileChannel h = new HostileChannel(targets.get(i).ticket(), 1);
            assertTrue(h.accepted(), "push " + i + " of " + cap + ": " + RdmaTransport.why(h.answer));
            channels.add(h);
        }
        targets.forEach(PushTransport.PushTarget::close);
        channels.forEach(HostileChannel::close);
    }
}
