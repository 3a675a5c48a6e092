package io.kvmarket.key;

/**
 * 128-bit key of one chunk of a prompt: the first 16 bytes of a hash over the namespace and every token up to
 * and including this chunk, read big-endian.
 */
public record ChunkKey(long hi, long lo) {

    @Override
    public String toString() {
        return String.format("%016x%016x", hi, lo);
    }
}
