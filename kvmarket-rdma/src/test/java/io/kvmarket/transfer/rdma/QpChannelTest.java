package io.kvmarket.transfer.rdma;

import org.bytedeco.javacpp.BytePointer;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.util.Arrays;
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
    /**
     * Segments back to back at the source share a READ (one SGE each), as an import's reads of a chunk region do; the
     * bytes land in scattered places exactly, one signaled completion per run, and a READ refused by the source's
     * registration reports its first segment, so the segments before it are known to have landed.
     */
    @Test
    void segmentsBackToBackAtTheSourceShareAReadAndLandExactly() {
        int piece = 1024;
        int count = 200; // 50 per queue pair: runs of 16 + 16 + 16 + 2 merged reads
        byte[] data = new byte[piece * count];
        new Random(4).nextBytes(data);
        try (VerbsContext ctx = VerbsContext.open(null, 0, -1);
             BytePointer src = new BytePointer(data.length);
             BytePointer dst = new BytePointer(data.length)) {
            src.put(data, 0, data.length);
            dst.fill(0);
            try (VerbsContext.MemoryRegion remote = ctx.register(src.address(), data.length, VerbsContext.REMOTE_READ,
                    false);
                 VerbsContext.MemoryRegion local = ctx.register(dst.address(), data.length, VerbsContext.LOCAL_WRITE,
                         false);
                 QpChannel reader = QpChannel.create(ctx, 4, 64, 0, 0);
                 QpChannel served = QpChannel.create(ctx, 4, 1, 0, VerbsContext.REMOTE_READ)) {
                served.connect(new QpChannel.Remote(reader.qpns, reader.psns, ctx.gid, ctx.lid), ctx.mtu, 4, 14, 7);
                reader.connect(new QpChannel.Remote(served.qpns, served.psns, ctx.gid, ctx.lid), ctx.mtu, 4, 14, 7);
                long[] remoteOff = new long[count];
                long[] localOff = new long[count];
                long[] len = new long[count];
                for (int i = 0; i < count; i++) {
                    remoteOff[i] = (long) i * piece;
                    localOff[i] = (long) ((i * 37) % count) * piece; // scattered, each place once
                    len[i] = piece;
                }
                int runs = reader.post(QpChannel.OP_READ | QpChannel.MERGE, 0, local.address, local.lkey,
                        remote.address, remote.rkey, localOff, remoteOff, len, count);
                assertEquals(4, runs);
                int got = 0;
                while (got < runs) {
                    int k = reader.poll(5000);
                    for (int i = 0; i < k; i++) {
                        assertEquals(QpChannel.WC_SUCCESS, reader.status[i]);
                        got++;
                    }
                }
                byte[] landed = new byte[data.length];
                dst.get(landed, 0, landed.length);
                for (int i = 0; i < count; i++) {
                    assertArrayEquals(Arrays.copyOfRange(data, i * piece, (i + 1) * piece),
                            Arrays.copyOfRange(landed, (int) localOff[i], (int) localOff[i] + piece), "segment " + i);
                }
                // A registration of the first 40 pieces only: run 0 reads 0..15, 16..31, then 32..47, which runs past it.
                try (VerbsContext.MemoryRegion small = ctx.register(src.address(), 40L * piece,
                        VerbsContext.REMOTE_READ, false)) {
                    reader.post(QpChannel.OP_READ | QpChannel.MERGE, 0, local.address, local.lkey, small.address,
                            small.rkey, localOff, remoteOff, len, count);
                    long firstFailed = -1;
                    while (firstFailed < 0) {
                        int k = reader.poll(5000);
                        for (int i = 0; i < k && firstFailed < 0; i++) {
                            if (reader.status[i] != QpChannel.WC_SUCCESS && reader.qpIndex[i] == 0) {
                                firstFailed = reader.wrIds[i];
                            }
                        }
                    }
                    assertEquals(32, firstFailed, "the failed READ names its first segment: 0..31 landed before it");
                }
            }
        }
    }
}
