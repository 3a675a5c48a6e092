package io.kvmarket.transfer.rdma;

import org.bytedeco.javacpp.BytePointer;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.util.HashMap;
import java.util.Map;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * The binding against the shim over the fake provider, below the transport: two channels of one process connected
 * to each other, and the split of a post into runs that the transport's accounting of delivered chunks relies on.
 */
@Timeout(60)
class QpChannelTest {

    @BeforeAll
    static void verbs() {
        FakeVerbs.require();
    }

    @Test
    void aPostSplitsIntoTheRunsTheTransportCountsOnAndReadsExactly() {
        int bytes = 1 << 16;
        byte[] data = new byte[bytes];
        new Random(3).nextBytes(data);
        try (VerbsContext ctx = VerbsContext.open(null, 0, -1);
             BytePointer src = new BytePointer(bytes);
             BytePointer dst = new BytePointer(bytes)) {
            src.put(data, 0, bytes);
            dst.fill(0);
            try (VerbsContext.MemoryRegion remote = ctx.register(src.address(), bytes, VerbsContext.REMOTE_READ, false);
                 VerbsContext.MemoryRegion local = ctx.register(dst.address(), bytes, VerbsContext.LOCAL_WRITE, false);
                 QpChannel reader = QpChannel.create(ctx, 4, 16, 0, 0);
                 QpChannel served = QpChannel.create(ctx, 4, 1, 0, VerbsContext.REMOTE_READ)) {
                served.connect(new QpChannel.Remote(reader.qpns, reader.psns, ctx.gid, ctx.lid), ctx.mtu, 4, 14, 7);
                reader.connect(new QpChannel.Remote(served.qpns, served.psns, ctx.gid, ctx.lid), ctx.mtu, 4, 14, 7);
                for (int count : new int[] {1, 3, 10, 13, 64}) {
                    long[] off = new long[count];
                    long[] len = new long[count];
                    int piece = bytes / count;
                    for (int i = 0; i < count; i++) {
                        off[i] = (long) (count - 1 - i) * piece; // back to front: no two merge
                        len[i] = piece;
                    }
                    int runs = reader.post(QpChannel.OP_READ, 1000, local.address, local.lkey, remote.address,
                            remote.rkey, off, off, len, count);
                    assertEquals(Math.min(4, count), runs);
                    Map<Integer, Long> lastOfRun = new HashMap<>();
                    while (lastOfRun.size() < runs) {
                        int k = reader.poll(5000);
                        for (int i = 0; i < k; i++) {
                            assertEquals(QpChannel.WC_SUCCESS, reader.status[i]);
                            lastOfRun.put(reader.qpIndex[i], reader.wrIds[i]);
                        }
                    }
                    for (int q = 0; q < runs; q++) {
                        assertEquals(1000L + RdmaTransport.runStart(q + 1, count, runs) - 1, lastOfRun.get(q),
                                "last segment of run " + q + " of " + count);
                    }
                    byte[] got = new byte[piece * count];
                    dst.get(got, 0, got.length);
                    byte[] want = new byte[piece * count];
                    System.arraycopy(data, 0, want, 0, want.length);
                    assertArrayEquals(want, got, count + " segments");
                    dst.fill(0);
                }
            }
        }
    }
}
