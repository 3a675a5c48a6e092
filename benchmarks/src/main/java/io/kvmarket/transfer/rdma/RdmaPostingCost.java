package io.kvmarket.transfer.rdma;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;
import org.bytedeco.javacpp.BytePointer;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Random;

/**
 * {@code rdma_posting}: what an RDMA import costs this process before the NIC takes over, for 1 GiB of KV in 8,192
 * segments of 128 KiB, laid out as an import's are (each pooled chunk holds a region of its 16 blocks back to back,
 * the blocks land scattered): planning the reads ({@link ReadPlan}, as the transport does per import) and posting
 * them ({@code kvm_rdma_post} with merging, as the transport posts: 16 segments back to back at the source make one
 * READ of 16 SGEs; chained per queue pair, 4 queue pairs), against the time the import takes on the wire at 50 GB/s (a 400 Gb/s NIC),
 * computed since no NIC is here. Target: at most 1% (about 200 us). Runs over whatever libibverbs the dynamic linker
 * finds: the project's fake provider here (its post copies each work request into its own queue, where a NIC's
 * provider writes it to a ring), so the post figure is the shim's cost plus the fake's. The wire time is excluded: each
 * round stops the clock once the reads are posted, then waits for them on one reused channel (as imports reuse
 * theirs); the last round's bytes are checked, segment by segment. {@code post_cpu_us} is the posting thread's CPU
 * time in the post: on a small machine the fake's own threads (the "NIC") take cores from it, which a NIC does not.
 *
 * <p>Lives in the transport's package to time its package-private planning and binding exactly as the transport
 * calls them.
 */
public final class RdmaPostingCost {

    static final long BYTES = 1L << 30;
    static final int SEGMENTS = 8192;
    static final double NIC_BYTES_PER_SECOND = 50e9;

    public static void main(String[] args) {
        int rounds = args.length > 0 ? Integer.parseInt(args[0]) : 200;
        Verbs.ensureAvailability();
        long segment = BYTES / SEGMENTS;
        // The source's chunks (16 segments each) and a batch that scatters every segment to a shuffled block.
        int chunkSegments = 16;
        List<Offer> chunks = new ArrayList<>();
        Endpoint endpoint = new Endpoint(Endpoint.RDMA, new byte[] {1});
        for (int c = 0; c < SEGMENTS / chunkSegments; c++) {
            chunks.add(Offer.of(new ChunkKey(9, c), 1, ProcessIdentity.current(), endpoint,
                    (long) c * chunkSegments * segment, chunkSegments * segment, 1, c + 1, Long.MAX_VALUE));
        }
        Integer[] blocks = new Integer[SEGMENTS];
        for (int i = 0; i < SEGMENTS; i++) {
            blocks[i] = i;
        }
        java.util.Collections.shuffle(Arrays.asList(blocks), new Random(1));
        CopyBatch.Builder b = CopyBatch.builder();
        for (int i = 0; i < SEGMENTS; i++) {
            b.add(i * segment, blocks[i] * segment, segment);
        }
        CopyBatch batch = b.build();
        if (batch.segments() != SEGMENTS) {
            throw new IllegalStateException("segments merged: " + batch.segments());
        }
        for (int i = 0; i < 500; i++) { // the planning code as a running server has it: compiled
            ReadPlan.of(chunks, batch, BYTES);
        }
        long[] plans = new long[rounds];
        long[] posts = new long[rounds];
        long[] postCpu = new long[rounds];
        java.lang.management.ThreadMXBean cpu = java.lang.management.ManagementFactory.getThreadMXBean();
        boolean exact;
        try (VerbsContext ctx = VerbsContext.open(null, 0, -1);
             BytePointer src = new BytePointer(BYTES);
             BytePointer dst = new BytePointer(BYTES);
             VerbsContext.MemoryRegion remote = ctx.register(src.address(), BYTES, VerbsContext.REMOTE_READ, false);
             VerbsContext.MemoryRegion local = ctx.register(dst.address(), BYTES, VerbsContext.LOCAL_WRITE, false);
             QpChannel reader = QpChannel.create(ctx, 4, 4096, 0, 0);
             QpChannel served = QpChannel.create(ctx, 4, 1, 0, VerbsContext.REMOTE_READ)) {
            fill(src);
            served.connect(new QpChannel.Remote(reader.qpns, reader.psns, ctx.gid, ctx.lid), ctx.mtu, 16, 14, 7);
            reader.connect(new QpChannel.Remote(served.qpns, served.psns, ctx.gid, ctx.lid), ctx.mtu, 16, 14, 7);
            for (int r = -3; r < rounds; r++) { // 3 rounds to warm up; the channel is reused, as imports reuse it
                long t0 = System.nanoTime();
                ReadPlan plan = ReadPlan.of(chunks, batch, BYTES);
                long t1 = System.nanoTime();
                long c1 = cpu.getCurrentThreadCpuTime();
                int runs = reader.post(QpChannel.OP_READ | QpChannel.MERGE, 0, local.address, local.lkey,
                        remote.address, remote.rkey,
                        plan.localOff, plan.remoteOff, plan.length, plan.segments());
                long t2 = System.nanoTime();
                long c2 = cpu.getCurrentThreadCpuTime();
                awaitAll(reader, runs); // the wire: not timed
                if (r >= 0) {
                    plans[r] = t1 - t0;
                    posts[r] = t2 - t1;
                    postCpu[r] = c2 - c1;
                }
            }
            exact = landedExactly(src, dst, batch);
        }
        double planUs = median(plans) / 1e3;
        double postUs = median(posts) / 1e3;
        double postCpuUs = median(postCpu) / 1e3;
        double wireUs = BYTES / NIC_BYTES_PER_SECOND * 1e6;
        double ratio = (planUs + postUs) / wireUs;
        System.out.println(String.format(Locale.ROOT, "rdma_posting: bytes=%d segments=%d queue_pairs=4 plan_us=%.1f "
                + "post_us=%.1f post_cpu_us=%.1f total_us=%.1f wire_at_50GBps_us=%.0f ratio=%.4f target=<=0.01 met=%b bitexact=%b "
                + "provider=%s rounds=%d", BYTES, SEGMENTS, planUs, postUs, postCpuUs, planUs + postUs, wireUs, ratio,
                ratio <= 0.01, exact,
                System.getenv().getOrDefault("LD_LIBRARY_PATH", "").contains("fake-verbs") ? "fake" : "system", rounds));
    }

    /** Waits for the signaled completion of every run; any failure ends the benchmark. */
    private static void awaitAll(QpChannel ch, int runs) {
        int got = 0;
        long deadline = System.nanoTime() + 120_000_000_000L;
        while (got < runs) {
            if (System.nanoTime() > deadline) {
                throw new IllegalStateException("reads did not complete in 120 s");
            }
            int k = ch.poll(100);
            for (int i = 0; i < k; i++) {
                if (ch.status[i] != QpChannel.WC_SUCCESS) {
                    throw new IllegalStateException("read failed: " + Verbs.completionStatus(ch.status[i]));
                }
                got++;
            }
        }
    }

    private static void fill(BytePointer p) {
        byte[] chunk = new byte[1 << 20];
        Random rnd = new Random(7);
        for (long at = 0; at < BYTES; at += chunk.length) {
            rnd.nextBytes(chunk);
            p.position(at).put(chunk, 0, chunk.length);
        }
        p.position(0);
    }

    /** Every segment's bytes where the batch put them. */
    private static boolean landedExactly(BytePointer src, BytePointer dst, CopyBatch batch) {
        byte[] a = new byte[(int) batch.length(0)];
        byte[] b = new byte[a.length];
        for (int i = 0; i < batch.segments(); i++) {
            src.position(batch.srcOffset(i)).get(a, 0, a.length);
            dst.position(batch.dstOffset(i)).get(b, 0, b.length);
            if (!Arrays.equals(a, b)) {
                return false;
            }
        }
        src.position(0);
        dst.position(0);
        return true;
    }

    private static double median(long[] v) {
        long[] s = v.clone();
        Arrays.sort(s);
        return s[s.length / 2];
    }
}
