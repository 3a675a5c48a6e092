package io.kvmarket.transfer.rdma;

import io.kvmarket.Handoff;
import io.kvmarket.key.Namespace;
import io.kvmarket.registry.InProcessRegistry;
import io.kvmarket.testkit.DeviceBytes;
import io.kvmarket.testkit.KvFixture;
import io.kvmarket.transfer.PushTransport;
import io.kvmarket.transfer.TransferException;
import io.kvmarket.transfer.TransferFailure;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.nio.ByteBuffer;
import java.util.Arrays;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Pushes (RDMA WRITE with immediate) over the fake provider: a receiver opens spans of its memory to one push and
 * learns of completion from the immediates; the sender reaches those spans and nothing else, once, before the
 * timeout; and between two marketplaces, a prefill engine's blocks land in a decode engine's blocks.
 */
@Timeout(120)
class RdmaPushTest extends PushRig {

    /** Every transport closed, nothing of verbs is left open; runs before the rig closes the devices. */
    @AfterEach
    void nothingLeft() {
        assertNothingLeft();
    }

    private static long[][] spans(int n, int seed) {
        return spans(n, seed, false); // some back to back
    }

    private void assertPushed(long[][] s, int n) {
        assertArrayEquals(expected(s, n), dstNow(), "the spans pushed, every other byte kept");
    }

    @Test
    void aPushLandsExactlyInItsSpansAndTheReceiverLearnsItFromTheImmediates() {
        long[][] s = spans(40, 3);
        PushTransport.PushTarget target = receiver.expectPush(dst, s[0], s[2], 10_000);
        long registered = Verbs.liveObjects()[1];
        assertTrue(registered > liveBefore[1] + 1, "each run of spans registered on its own");
        sender.push(target.ticket(), src, s[1]).join();
        target.landed().join();
        assertPushed(s, 40);
        assertEquals(liveBefore[1] + 1, Verbs.liveObjects()[1], "the spans deregistered once landed (the sender's "
                + "source registration stays, for its next push)");
    }

    @Test
    void morePushedSpansThanTheQueuesHoldGoInWindows() throws Exception {
        sender.close();
        sender = open(senderDevice, 1, RdmaTransportContractTest.importing().withQueues(2, 4, 2));
        long[][] s = spans(61, 4);
        PushTransport.PushTarget target = receiver.expectPush(dst, s[0], s[2], 10_000);
        sender.push(target.ticket(), src, s[1]).join();
        target.landed().join();
        assertPushed(s, 61);
    }

    @Test
    void aTicketPushesOnceOnly() {
        long[][] s = spans(8, 5);
        PushTransport.PushTarget target = receiver.expectPush(dst, s[0], s[2], 10_000);
        byte[] ticket = target.ticket();
        sender.push(ticket, src, s[1]).join();
        target.landed().join();
        DeviceBytes.HOST.write(dst, 0, dstBefore);
        TransferException e = failure(sender.push(ticket, src, s[1]));
        assertEquals(TransferFailure.UNREACHABLE, e.failure(), e.getMessage());
        assertArrayEquals(dstBefore, DeviceBytes.HOST.read(dst, 0, dstBefore.length), "a replayed ticket writes nothing");
    }

    @Test
    void aPushAfterTheTimeoutOrAfterCloseIsRefusedAndWritesNothing() throws Exception {
        long[][] s = spans(8, 6);
        PushTransport.PushTarget timedOut = receiver.expectPush(dst, s[0], s[2], 50);
        TransferException late = failure(timedOut.landed());
        assertTrue(late.getMessage().contains("no push landed within 50 ms"), late.getMessage());
        assertEquals(TransferFailure.UNREACHABLE, failure(sender.push(timedOut.ticket(), src, s[1])).failure());
        PushTransport.PushTarget cancelled = receiver.expectPush(dst, s[0], s[2], 10_000);
        cancelled.close();
        failure(cancelled.landed());
        assertEquals(TransferFailure.UNREACHABLE, failure(sender.push(cancelled.ticket(), src, s[1])).failure());
        assertArrayEquals(dstBefore, DeviceBytes.HOST.read(dst, 0, dstBefore.length));
        assertEquals(liveBefore[1] + 1, Verbs.liveObjects()[1], "no span registration left (the sender's source stays)");
    }

    @Test
    void aForgedTicketReachesNoByteOutsideTheSpans() {
        long[][] s = spans(4, 7);
        PushTransport.PushTarget target = receiver.expectPush(dst, s[0], s[2], 1000);
        byte[] ticket = target.ticket();
        // The ticket's first span moved one span further: the same key, memory the receiver did not open.
        ByteBuffer b = ByteBuffer.wrap(ticket);
        int spansAt = 2 + 4 + 2 + 4 + 8 + 4;
        b.putLong(spansAt, b.getLong(spansAt) + 64 * SPAN);
        TransferException e = failure(sender.push(ticket, src, s[1]));
        assertTrue(e.getMessage().contains("REM_ACCESS_ERR"), e.getMessage());
        failure(target.landed()); // never completed: it times out, and its spans are withdrawn
        byte[] now = DeviceBytes.HOST.read(dst, 0, dstBefore.length);
        for (int i = 1; i < 4; i++) { // spans other than the forged one may have landed; nothing else changed
            System.arraycopy(now, (int) s[0][i], dstBefore, (int) s[0][i], (int) s[2][i]);
        }
        assertArrayEquals(dstBefore, now);
        // A forged token is refused before any queue pair is set up.
        PushTransport.PushTarget second = receiver.expectPush(dst, s[0], s[2], 10_000);
        byte[] badToken = second.ticket();
        badToken[2 + 4 + 2 + 4] ^= 1;
        assertEquals(TransferFailure.UNREACHABLE, failure(sender.push(badToken, src, s[1])).failure());
        second.close();
    }

    @Test
    void malformedTicketsAndMismatchedSpansAreProgrammingErrors() {
        long[][] s = spans(4, 8);
        PushTransport.PushTarget target = receiver.expectPush(dst, s[0], s[2], 10_000);
        byte[] ticket = target.ticket();
        assertThrows(IllegalArgumentException.class, () -> sender.push(new byte[] {1, 4}, src, s[1]));
        assertThrows(IllegalArgumentException.class, () -> sender.push(Arrays.copyOf(ticket, ticket.length - 1), src,
                s[1]));
        assertThrows(IllegalArgumentException.class, () -> sender.push(ticket, src, Arrays.copyOf(s[1], 3)));
        assertThrows(IllegalArgumentException.class, () -> sender.push(ticket, src,
                new long[] {0, 0, 0, srcBytes.length - 100}));
        assertThrows(IllegalArgumentException.class, () -> receiver.expectPush(dst, new long[] {0, 100},
                new long[] {200, 200}, 1000), "overlapping spans");
        assertThrows(IllegalArgumentException.class, () -> receiver.expectPush(dst, new long[] {dstBefore.length - 1},
                new long[] {2}, 1000), "past the destination");
        assertThrows(IllegalStateException.class, () -> sender.expectPush(src, new long[] {0}, new long[] {1}, 1000),
                "a transport without a control server takes no pushes");
        target.close();
    }

    /** A prefill engine's KV lands in a decode engine's blocks through the marketplace API. */
    @Test
    void aPrefillEngineHandsAPromptsKvToADecodeEngine() {
        try (InProcessRegistry registry = new InProcessRegistry();
             KvFixture prefill = new KvFixture(senderDevice, DeviceBytes.HOST, false, registry, KvFixture.NS, t -> t,
                     b -> b.transports(List.of(sender)));
             KvFixture decode = new KvFixture(receiverDevice, DeviceBytes.HOST, false, registry, KvFixture.NS, t -> t,
                     b -> b.transports(List.of(receiver)))) {
            int tokens = 16 * 20 + 5; // the last block part full
            int blocks = 21;
            int[] prefillBlocks = KvFixture.scattered(KvFixture.BLOCKS, 11);
            int[] decodeBlocks = KvFixture.scattered(KvFixture.BLOCKS, 12);
            prefill.fill(prefillBlocks, blocks, 9);
            Handoff handoff = decode.market.expectHandoff(decodeBlocks, tokens, 10_000);
            prefill.market.handOff(handoff.ticket(), prefillBlocks, tokens).join();
            handoff.landed().join();
            assertEquals(-1, decode.firstWrongBlock(decodeBlocks, blocks, 9), "every block of the prompt, exact");

            Handoff other = decode.market.expectHandoff(decodeBlocks, tokens, 10_000);
            assertThrows(IllegalArgumentException.class, () -> prefill.market.handOff(other.ticket(), prefillBlocks,
                    tokens + 16), "another prompt size");
            other.close();
        }
    }

    @Test
    void aHandoffOfAnotherModelRevisionIsRefusedBeforeAnyByteMoves() {
        Namespace rev2 = Namespace.of("fixture-model", "rev2", "ids", KvFixture.LAYOUT);
        try (InProcessRegistry registry = new InProcessRegistry();
             KvFixture prefill = new KvFixture(senderDevice, DeviceBytes.HOST, false, registry, rev2, t -> t,
                     b -> b.transports(List.of(sender)));
             KvFixture decode = new KvFixture(receiverDevice, DeviceBytes.HOST, false, registry, KvFixture.NS, t -> t,
                     b -> b.transports(List.of(receiver)))) {
            int[] blocks = KvFixture.scattered(KvFixture.BLOCKS, 13);
            Handoff handoff = decode.market.expectHandoff(blocks, 64, 10_000);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> prefill.market.handOff(handoff.ticket(), blocks, 64));
            assertTrue(e.getMessage().contains("namespace"), e.getMessage());
            handoff.close();
        }
    }
}
