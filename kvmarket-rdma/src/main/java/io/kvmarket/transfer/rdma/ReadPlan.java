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
    /** Chunk offsets in the source, ascending, and the index in {@link #chunks} of each. */
    private final long[] starts;
    private final int[] order;

    private ReadPlan(List<Offer> chunks, CopyBatch batch, long[] starts, int[] order) {
        this.chunks = chunks;
        this.localOff = batch.dstOffsetArray();
        this.remoteOff = batch.srcOffsetArray();
        this.length = batch.lengthArray();
        this.starts = starts;
        this.order = order;
    }

    int segments() {
        return localOff.length;
    }

    /**
     * @throws IllegalArgumentException when a segment reads outside the chunks or writes past {@code dstSize}: the
     *                                  caller's plan is wrong
     */
    static ReadPlan of(List<Offer> chunks, CopyBatch batch, long dstSize) {
        int n = chunks.size();
        Integer[] byOffset = new Integer[n];
        for (int i = 0; i < n; i++) {
            byOffset[i] = i;
        }
        Arrays.sort(byOffset, (a, b) -> Long.compare(chunks.get(a).offset(), chunks.get(b).offset()));
        long[] starts = new long[n];
        int[] order = new int[n];
        for (int i = 0; i < n; i++) {
            order[i] = byOffset[i];
            starts[i] = chunks.get(order[i]).offset();
        }
        ReadPlan plan = new ReadPlan(List.copyOf(chunks), batch, starts, order);
        for (int s = 0; s < batch.segments(); s++) {
            if (batch.length(s) <= 0 || batch.dstOffset(s) < 0 || batch.dstOffset(s) > dstSize - batch.length(s)) {
                throw new IllegalArgumentException("segment " + s + " writes [" + batch.dstOffset(s) + ", +"
                        + batch.length(s) + ") outside the destination of " + dstSize + " bytes");
            }
            plan.forEachChunk(s, null);
        }
        return plan;
    }

    /**
     * Chunks, from the first in import order, whose every segment is marked in {@code landed}.
     */
    int delivered(boolean[] landed) {
        boolean[] whole = new boolean[chunks.size()];
        Arrays.fill(whole, true);
        for (int s = 0; s < landed.length; s++) {
            if (!landed[s]) {
                forEachChunk(s, whole);
            }
        }
        int d = 0;
        while (d < whole.length && whole[d]) {
            d++;
        }
        return d;
    }

    /** Walks the chunks segment {@code s} reads (a merged segment may span chunks back to back), clearing them in {@code whole}. */
    private void forEachChunk(int s, boolean[] whole) {
        long src = remoteOff[s];
        long len = length[s];
        while (len > 0) {
            int at = Arrays.binarySearch(starts, src);
            at = at >= 0 ? at : -at - 2;
            Offer chunk = at < 0 ? null : chunks.get(order[at]);
            if (chunk == null || src - chunk.offset() >= chunk.length()) {
                throw new IllegalArgumentException("segment " + s + " reads source byte " + src
                        + " outside the chunks fetched");
            }
            if (whole != null) {
                whole[order[at]] = false;
            }
            long piece = Math.min(len, chunk.offset() + chunk.length() - src);
            src += piece;
            len -= piece;
        }
    }
}
