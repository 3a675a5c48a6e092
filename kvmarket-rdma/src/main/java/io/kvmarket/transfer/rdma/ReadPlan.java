package io.kvmarket.transfer.rdma;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.registry.Offer;

import java.util.Arrays;
import java.util.List;

/**
 * The RDMA READs of one import from one source, one per segment of its batch, and which chunks each segment fills:
 * when the reads stop part way, the chunks whose every segment landed, from the first, are what was delivered.
 */
final class ReadPlan {

    final List<Offer> chunks;
    final long[] localOff;
    final long[] remoteOff;
    final long[] length;
    private final int segments;
    /** Chunk spans in the source, ascending, and the index in {@link #chunks} of each. */
    private final long[] starts;
    private final long[] ends;
    private final int[] order;

    private ReadPlan(List<Offer> chunks, CopyBatch batch, long[] starts, long[] ends, int[] order) {
        this.chunks = chunks;
        this.segments = batch.segments();
        this.localOff = batch.dstOffsetArray();
        this.remoteOff = batch.srcOffsetArray();
        this.length = batch.lengthArray();
        this.starts = starts;
        this.ends = ends;
        this.order = order;
    }

    int segments() {
        return segments;
    }

    /**
     * @throws IllegalArgumentException when a segment reads outside the chunks or writes past {@code dstSize}: the
     *                                  caller's plan is wrong
     */
    static ReadPlan of(List<Offer> chunks, CopyBatch batch, long dstSize) {
        int n = chunks.size();
        int[] order = new int[n];
        boolean sorted = true;
        for (int i = 0; i < n; i++) {
            order[i] = i;
            sorted &= i == 0 || chunks.get(i - 1).offset() <= chunks.get(i).offset();
        }
        if (!sorted) { // imports usually list chunks in pool order; sort only when they do not
            Integer[] byOffset = new Integer[n];
            for (int i = 0; i < n; i++) {
                byOffset[i] = i;
            }
            Arrays.sort(byOffset, (a, b) -> Long.compare(chunks.get(a).offset(), chunks.get(b).offset()));
            for (int i = 0; i < n; i++) {
                order[i] = byOffset[i];
            }
        }
        long[] starts = new long[n];
        long[] ends = new long[n];
        for (int i = 0; i < n; i++) {
            Offer o = chunks.get(order[i]);
            starts[i] = o.offset();
            ends[i] = o.offset() + o.length();
        }
        ReadPlan plan = new ReadPlan(List.copyOf(chunks), batch, starts, ends, order);
        int hint = 0;
        for (int s = 0; s < plan.segments; s++) {
            long len = plan.length[s];
            long dst = plan.localOff[s];
            if (len <= 0 || dst < 0 || dst > dstSize - len) {
                throw new IllegalArgumentException("segment " + s + " writes [" + dst + ", +" + len
                        + ") outside the destination of " + dstSize + " bytes");
            }
            hint = plan.forEachChunk(s, null, hint);
        }
        return plan;
    }

    /**
     * Chunks, from the first in import order, whose every segment is marked in {@code landed}.
     */
    int delivered(boolean[] landed) {
        boolean[] whole = new boolean[chunks.size()];
        Arrays.fill(whole, true);
        int hint = 0;
        for (int s = 0; s < segments; s++) {
            if (!landed[s]) {
                hint = forEachChunk(s, whole, hint);
            }
        }
        int d = 0;
        while (d < whole.length && whole[d]) {
            d++;
        }
        return d;
    }

    /**
     * Walks the chunks segment {@code s} reads (a merged segment may span chunks back to back), clearing them in
     * {@code whole}; starts looking at sorted position {@code hint} (segments mostly follow the chunks).
     *
     * @return the sorted position of the last chunk it read
     */
    private int forEachChunk(int s, boolean[] whole, int hint) {
        long src = remoteOff[s];
        long len = length[s];
        int at = hint;
        while (len > 0) {
            if (at >= starts.length || src < starts[at] || src >= ends[at]) {
                at = Arrays.binarySearch(starts, src);
                at = at >= 0 ? at : -at - 2;
                if (at < 0 || src >= ends[at]) {
                    throw new IllegalArgumentException("segment " + s + " reads source byte " + src
                            + " outside the chunks fetched");
                }
            }
            if (whole != null) {
                whole[order[at]] = false;
            }
            long piece = Math.min(len, ends[at] - src);
            src += piece;
            len -= piece;
        }
        return at;
    }
}
