package io.kvmarket.device;

import java.util.Arrays;

/**
 * Many {@code (source offset, destination offset, length)} segments issued as one device call. Struct of arrays
 * so a native layer can take the three arrays as they are. Adjacent segments that continue each other on both
 * sides are merged as they are added, so a contiguous run costs one segment.
 */
public final class CopyBatch {

    private final long[] src;
    private final long[] dst;
    private final long[] len;
    private final int count;
    private final long totalBytes;

    private CopyBatch(long[] src, long[] dst, long[] len, int count, long totalBytes) {
        this.src = src;
        this.dst = dst;
        this.len = len;
        this.count = count;
        this.totalBytes = totalBytes;
    }

    public static Builder builder() {
        return new Builder();
    }

    public int segments() {
        return count;
    }

    public long totalBytes() {
        return totalBytes;
    }

    public long srcOffset(int i) {
        return src[check(i)];
    }

    public long dstOffset(int i) {
        return dst[check(i)];
    }

    public long length(int i) {
        return len[check(i)];
    }

    /**
     * The backing arrays, shared and not copied, for a native layer that takes them as they are (copying 32K
     * segments would cost more than the launch). Only the first {@link #segments()} entries count. Read only.
     */
    public long[] srcOffsetArray() {
        return src;
    }

    /** See {@link #srcOffsetArray()}. */
    public long[] dstOffsetArray() {
        return dst;
    }

    /** See {@link #srcOffsetArray()}. */
    public long[] lengthArray() {
        return len;
    }

    /**
     * Checks every segment against the buffer sizes before anything is copied.
     *
     * @throws IllegalArgumentException naming the first segment that falls outside either buffer
     */
    public void checkBounds(long srcSize, long dstSize) {
        for (int i = 0; i < count; i++) {
            if (src[i] + len[i] > srcSize || dst[i] + len[i] > dstSize) {
                throw new IllegalArgumentException("segment " + i + " (src " + src[i] + ", dst " + dst[i] + ", len "
                        + len[i] + ") exceeds source of " + srcSize + " or destination of " + dstSize + " bytes");
            }
        }
    }

    private int check(int i) {
        if (i < 0 || i >= count) {
            throw new IndexOutOfBoundsException("segment " + i + " of " + count);
        }
        return i;
    }

    @Override
    public String toString() {
        return "CopyBatch[" + count + " segments, " + totalBytes + " bytes]";
    }

    /** Collects segments, merging contiguous runs. Not thread-safe. */
    public static final class Builder {
        private long[] src = new long[16];
        private long[] dst = new long[16];
        private long[] len = new long[16];
        private int count;
        private long total;

        /**
         * Adds a segment.
         *
         * @throws IllegalArgumentException for a negative offset, a non-positive length, or an overflowing end
         */
        public Builder add(long srcOffset, long dstOffset, long length) {
            if (srcOffset < 0 || dstOffset < 0 || length <= 0
                    || srcOffset + length < 0 || dstOffset + length < 0) {
                throw new IllegalArgumentException("bad segment: src " + srcOffset + ", dst " + dstOffset
                        + ", len " + length);
            }
            total += length;
            if (count > 0) {
                int last = count - 1;
                if (src[last] + len[last] == srcOffset && dst[last] + len[last] == dstOffset) {
                    len[last] += length;
                    return this;
                }
            }
            if (count == src.length) {
                src = Arrays.copyOf(src, count * 2);
                dst = Arrays.copyOf(dst, count * 2);
                len = Arrays.copyOf(len, count * 2);
            }
            src[count] = srcOffset;
            dst[count] = dstOffset;
            len[count] = length;
            count++;
            return this;
        }

        public int segments() {
            return count;
        }

        public CopyBatch build() {
            return new CopyBatch(Arrays.copyOf(src, count), Arrays.copyOf(dst, count), Arrays.copyOf(len, count),
                    count, total);
        }
    }
}
