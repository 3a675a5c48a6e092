package io.kvmarket.transfer.tcp;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.registry.Offer;

import java.util.Arrays;
import java.util.List;

/**
 * Where each byte of a pull's stream goes. The server streams whole chunks in request order; the batch says where
 * in the importer's memory each span of each chunk lands. Pieces are per chunk, sorted by their offset in it, so the
 * stream is read once, straight into place.
 */
final class FetchPlan {

    final List<Offer> chunks;
    /** Per chunk: flattened (offset in chunk, destination offset, length) triples, by offset in chunk. */
    final long[][] pieces;

    private FetchPlan(List<Offer> chunks, long[][] pieces) {
        this.chunks = chunks;
        this.pieces = pieces;
    }

    /**
     * @throws IllegalArgumentException when a segment reads outside the chunks, two read the same bytes, or one
     *                                  writes past {@code dstSize}: the caller's plan is wrong
     */
    static FetchPlan of(List<Offer> chunks, CopyBatch batch, long dstSize) {
        int n = chunks.size();
        Integer[] byOffset = new Integer[n];
        for (int i = 0; i < n; i++) {
            byOffset[i] = i;
        }
        Arrays.sort(byOffset, (a, b) -> Long.compare(chunks.get(a).offset(), chunks.get(b).offset()));
        long[] starts = new long[n];
        for (int i = 0; i < n; i++) {
            starts[i] = chunks.get(byOffset[i]).offset();
        }
        long[][] pieces = new long[n][];
        int[] counts = new int[n];
        for (int i = 0; i < n; i++) {
            pieces[i] = new long[12];
        }
        for (int s = 0; s < batch.segments(); s++) {
            long src = batch.srcOffset(s);
            long dst = batch.dstOffset(s);
            long len = batch.length(s);
            if (dst > dstSize - len) {
                throw new IllegalArgumentException("segment " + s + " writes [" + dst + ", " + (dst + len)
                        + ") past the destination of " + dstSize + " bytes");
            }
            while (len > 0) { // a merged segment may span chunks that lie back to back in the pool
                int at = Arrays.binarySearch(starts, src);
                at = at >= 0 ? at : -at - 2;
                Offer chunk = at < 0 ? null : chunks.get(byOffset[at]);
                if (chunk == null || src - chunk.offset() >= chunk.length()) {
                    throw new IllegalArgumentException("segment " + s + " reads source byte " + src
                            + " outside the chunks fetched");
                }
                int c = byOffset[at];
                long piece = Math.min(len, chunk.offset() + chunk.length() - src);
                if (counts[c] + 3 > pieces[c].length) {
                    pieces[c] = Arrays.copyOf(pieces[c], pieces[c].length * 2);
                }
                pieces[c][counts[c]++] = src - chunk.offset();
                pieces[c][counts[c]++] = dst;
                pieces[c][counts[c]++] = piece;
                src += piece;
                dst += piece;
                len -= piece;
            }
        }
        for (int c = 0; c < n; c++) {
            pieces[c] = sortedDisjoint(Arrays.copyOf(pieces[c], counts[c]), c);
        }
        return new FetchPlan(List.copyOf(chunks), pieces);
    }

    private static long[] sortedDisjoint(long[] triples, int chunk) {
        int count = triples.length / 3;
        Integer[] order = new Integer[count];
        for (int i = 0; i < count; i++) {
            order[i] = i;
        }
        Arrays.sort(order, (a, b) -> Long.compare(triples[a * 3], triples[b * 3]));
        long[] out = new long[triples.length];
        long end = 0;
        for (int i = 0; i < count; i++) {
            int p = order[i];
            if (triples[p * 3] < end) {
                throw new IllegalArgumentException("two segments read byte " + triples[p * 3] + " of chunk " + chunk);
            }
            System.arraycopy(triples, p * 3, out, i * 3, 3);
            end = triples[p * 3] + triples[p * 3 + 2];
        }
        return out;
    }
}
