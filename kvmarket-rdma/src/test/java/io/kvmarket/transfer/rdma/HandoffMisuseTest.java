package io.kvmarket.transfer.rdma;

import io.kvmarket.Handoff;
import io.kvmarket.registry.InProcessRegistry;
import io.kvmarket.testkit.DeviceBytes;
import io.kvmarket.testkit.KvFixture;
import io.kvmarket.transfer.PushTransport;
import io.kvmarket.transfer.TransferFailure;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicReference;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/** The handoff API and the push SPI misused by their own user; windows of every shape; close racing expectPush. */
@Timeout(120)
class HandoffMisuseTest extends PushRig {

    private KvFixture fixture(InProcessRegistry registry, RdmaTransport t, io.kvmarket.device.host.HostDevice d) {
        return new KvFixture(d, DeviceBytes.HOST, false, registry, KvFixture.NS, x -> x,
                b -> b.transports(List.of(t)));
    }

    /** Token counts near Integer.MAX_VALUE are refused as arguments (the block count must not overflow). */
    @Test
    void hugeTokenCountsAreIllegalArgumentsNotOtherRuntimeExceptions() {
        try (InProcessRegistry registry = new InProcessRegistry();
             KvFixture prefill = fixture(registry, sender, senderDevice);
             KvFixture decode = fixture(registry, receiver, receiverDevice)) {
            int[] blocks = KvFixture.scattered(KvFixture.BLOCKS, 1);
            List<String> wrong = new ArrayList<>();
            for (int tokens : new int[] {Integer.MAX_VALUE, Integer.MAX_VALUE - 3}) {
                try {
                    decode.market.expectHandoff(blocks, tokens, 1000).close();
                    wrong.add("expectHandoff(" + tokens + ") returned");
                } catch (IllegalArgumentException expected) {
                    // right
                } catch (RuntimeException e) {
                    wrong.add("expectHandoff(" + tokens + "): " + e);
                }
                try {
                    prefill.market.handOff(new byte[100], blocks, tokens);
                    wrong.add("handOff(" + tokens + ") returned");
                } catch (IllegalArgumentException expected) {
                    // right
                } catch (RuntimeException e) {
                    wrong.add("handOff(" + tokens + "): " + e);
                }
            }
            assertEquals(List.of(), wrong);
        }
    }

    /** Zero, negative tokens, short tables, blocks outside the cache, bad timeouts, a wrong prompt size. */
    @Test
    void ordinaryMisuseIsRefusedAsProgrammingErrors() {
        try (InProcessRegistry registry = new InProcessRegistry();
             KvFixture prefill = fixture(registry, sender, senderDevice);
             KvFixture decode = fixture(registry, receiver, receiverDevice)) {
            int[] blocks = KvFixture.scattered(KvFixture.BLOCKS, 2);
            assertThrows(IllegalArgumentException.class, () -> decode.market.expectHandoff(blocks, 0, 1000));
            assertThrows(IllegalArgumentException.class, () -> decode.market.expectHandoff(blocks, -5, 1000));
            assertThrows(IllegalArgumentException.class, () -> decode.market.expectHandoff(new int[2], 33, 1000));
            assertThrows(IllegalArgumentException.class, () -> decode.market.expectHandoff(new int[] {0, 64}, 17,
                    1000));
            assertThrows(IllegalArgumentException.class, () -> decode.market.expectHandoff(blocks, 16, 0));
            assertThrows(IllegalArgumentException.class, () -> decode.market.expectHandoff(blocks, 16, -1));
            Handoff h = decode.market.expectHandoff(blocks, 20, 10_000);
            byte[] ticket = h.ticket();
            assertThrows(IllegalArgumentException.class, () -> prefill.market.handOff(ticket, blocks, 17),
                    "same blocks, another prompt size");
            assertThrows(IllegalArgumentException.class, () -> prefill.market.handOff(ticket, new int[1], 20));
            assertThrows(IllegalArgumentException.class, () -> prefill.market.handOff(Arrays.copyOf(ticket, 45),
                    blocks, 20));
            byte[] bent = ticket.clone();
            bent[4 + 32 + 3] = 40; // header says 40 tokens (3 blocks): the inner ticket has 2 blocks' spans
            assertThrows(IllegalArgumentException.class, () -> prefill.market.handOff(bent, blocks, 40));
            prefill.market.handOff(ticket, blocks, 20).join();
            h.landed().join();
            failure(prefill.market.handOff(ticket, blocks, 20)); // the same ticket twice
            h.close(); // after it landed: nothing
        }
    }

    /** A marketplace without RDMA refuses both sides with IllegalStateException. */
    @Test
    void aMarketplaceWithoutPushRefusesHandoffs() {
        try (InProcessRegistry registry = new InProcessRegistry();
             KvFixture plain = new KvFixture(senderDevice, DeviceBytes.HOST, false, registry, KvFixture.NS, x -> x,
                     b -> { });
             KvFixture decode = fixture(registry, receiver, receiverDevice)) {
            int[] blocks = KvFixture.scattered(KvFixture.BLOCKS, 3);
            assertThrows(IllegalStateException.class, () -> plain.market.expectHandoff(blocks, 16, 1000));
            Handoff h = decode.market.expectHandoff(blocks, 16, 10_000);
            assertThrows(IllegalStateException.class, () -> plain.market.handOff(h.ticket(), blocks, 16));
            h.close();
        }
    }

    /**
     * The decode marketplace closed while a handoff is pending (transports given to the builder, so not closed by
     * it): the handoff is withdrawn, and no push lands in the closed marketplace's cache.
     */
    @Test
    void aHandoffPendingWhenItsMarketplaceClosesIsWithdrawn() {
        try (InProcessRegistry registry = new InProcessRegistry();
             KvFixture prefill = fixture(registry, sender, senderDevice)) {
            KvFixture decode = fixture(registry, receiver, receiverDevice);
            int[] blocks = KvFixture.scattered(KvFixture.BLOCKS, 4);
            prefill.fill(blocks, 2, 5);
            Handoff h = decode.market.expectHandoff(blocks, 32, 10_000);
            decode.market.close();
            assertThrows(IllegalStateException.class, () -> decode.market.expectHandoff(blocks, 32, 1000));
            String pushed;
            try {
                prefill.market.handOff(h.ticket(), blocks, 32).join();
                pushed = "landed";
            } catch (RuntimeException e) {
                pushed = "refused";
            }
            decode.close();
            assertEquals("refused", pushed, "a handoff outlived close() of its marketplace; landed(): "
                    + h.landed().isDone());
        }
    }

    /** Byte-exact pushes for uneven windows: spans that do not fill the last window or every queue pair. */
    @Test
    void everyWindowShapeLandsExactly() {
        int[][] queues = {{3, 2}, {4, 1}, {2, 3}, {5, 4}, {1, 1}, {7, 3}};
        int[] counts = {1, 2, 5, 6, 7, 13, 25, 61};
        for (int[] q : queues) {
            RdmaTransport s = open(senderDevice, 10 + q[0] * 10 + q[1], RdmaTransportContractTest.importing()
                    .withQueues(q[0], q[1], 2));
            for (int n : counts) {
                DeviceBytes.HOST.write(dst, 0, dstBefore);
                long[][] sp = spans(n, n * 31 + q[0], false);
                PushTransport.PushTarget t = expect(sp, n, 10_000);
                s.push(t.ticket(), src, sp[1]).join();
                t.landed().join();
                assertArrayEquals(expected(sp, n), dstNow(), q[0] + " QPs x " + q[1] + ", " + n + " spans");
            }
            s.close();
        }
        assertNothingLeft();
    }

    /** expectPush racing the transport's close: only IllegalStateException, and nothing left registered. */
    @Test
    void expectPushRacingCloseLeavesNothing() throws Exception {
        List<String> wrong = new ArrayList<>();
        for (int round = 0; round < 40; round++) {
            long[] base = Verbs.liveObjects();
            RdmaTransport r = RdmaTransportContractTest.open(receiverDevice, 50 + round,
                    RdmaTransportContractTest.serving());
            CountDownLatch go = new CountDownLatch(1);
            AtomicReference<Throwable> odd = new AtomicReference<>();
            List<PushTransport.PushTarget> opened = new ArrayList<>();
            Thread opener = new Thread(() -> {
                try {
                    go.await();
                    for (int i = 0; i < 200; i++) {
                        opened.add(r.expectPush(dst, new long[] {(i % SLOTS) * (long) SPAN}, new long[] {512},
                                60_000));
                    }
                } catch (IllegalStateException expected) {
                    // closed
                } catch (Throwable e) {
                    odd.set(e);
                }
            });
            opener.start();
            go.countDown();
            Thread.sleep(round % 5);
            r.close();
            opener.join();
            long[] live = Verbs.liveObjects();
            if (live[0] != base[0] || live[1] != base[1]) {
                wrong.add("round " + round + ": after close, contexts/registrations " + live[0] + "/" + live[1]
                        + " (before the transport opened: " + base[0] + "/" + base[1] + ")");
            }
            if (odd.get() != null) {
                wrong.add("round " + round + ": " + odd.get());
            }
            for (PushTransport.PushTarget t : opened) {
                if (!t.landed().isDone()) {
                    wrong.add("round " + round + ": a target outlived its transport's close");
                    t.close();
                    break;
                }
            }
        }
        assertEquals(List.of(), wrong.subList(0, Math.min(6, wrong.size())));
        assertNothingLeft();
        assertEquals(List.of(), RdmaRig.threadsLeft().stream().filter(n -> n.contains("push")).toList());
    }
}
