package io.kvmarket.key;

import io.kvmarket.kv.KvLayout;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.IntBuffer;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;

/**
 * Computes the chain of chunk keys of a prompt: {@code key(0) = H(namespace)},
 * {@code key(i) = H(key(i-1) || token ids of chunk i)}, token ids little-endian u32, H = SHA-256 truncated to 128
 * bits. SHA-256 is the default because a crafted collision must not let one tenant poison another's cache.
 *
 * <p>Only full chunks get keys. Thread-safe: each thread hashes with its own digest and scratch buffer.
 */
public final class PrefixHasher {

    private final ChunkKey root;
    private final int chunkTokens;
    private final ThreadLocal<Scratch> scratch;

    public PrefixHasher(Namespace namespace, int chunkTokens) {
        if (chunkTokens <= 0 || chunkTokens % namespace.layout().tokensPerBlock() != 0) {
            throw new IllegalArgumentException("chunkTokens " + chunkTokens
                    + " must be a positive multiple of tokensPerBlock " + namespace.layout().tokensPerBlock());
        }
        this.chunkTokens = chunkTokens;
        this.scratch = ThreadLocal.withInitial(() -> new Scratch(chunkTokens));
        this.root = toKey(sha256().digest(namespace.canonicalEncoding()));
    }

    /** key(0): the hash of the namespace alone. */
    public ChunkKey root() {
        return root;
    }

    public int chunkTokens() {
        return chunkTokens;
    }

    /** Number of full chunks in the first {@code tokenCount} tokens. */
    public int fullChunks(int tokenCount) {
        return tokenCount / chunkTokens;
    }

    /** Keys of the full chunks among the first {@code tokenCount} tokens; key i covers tokens [0, (i+1)*C). */
    public ChunkKey[] keys(int[] tokens, int tokenCount) {
        if (tokenCount < 0 || tokenCount > tokens.length) {
            throw new IllegalArgumentException("tokenCount " + tokenCount + " outside [0, " + tokens.length + "]");
        }
        int chunks = fullChunks(tokenCount);
        ChunkKey[] keys = new ChunkKey[chunks];
        Scratch s = scratch.get();
        long hi = root.hi();
        long lo = root.lo();
        for (int c = 0; c < chunks; c++) {
            s.buffer.putLong(0, hi).putLong(8, lo);
            s.tokens.put(0, tokens, c * chunkTokens, chunkTokens);
            s.digest.update(s.bytes);
            try {
                s.digest.digest(s.out, 0, 32);
            } catch (java.security.DigestException e) {
                throw new IllegalStateException("SHA-256 digest into a 32-byte buffer failed", e);
            }
            ByteBuffer out = ByteBuffer.wrap(s.out);
            hi = out.getLong(0);
            lo = out.getLong(8);
            keys[c] = new ChunkKey(hi, lo);
        }
        return keys;
    }

    /** Fingerprint of a layout: first 8 bytes of SHA-256 of its canonical encoding. */
    public static long layoutFingerprint(KvLayout layout) {
        return ByteBuffer.wrap(sha256().digest(Namespace.canonicalEncoding(layout))).getLong();
    }

    private static ChunkKey toKey(byte[] digest) {
        ByteBuffer b = ByteBuffer.wrap(digest);
        return new ChunkKey(b.getLong(0), b.getLong(8));
    }

    private static MessageDigest sha256() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("every Java platform must provide SHA-256", e);
        }
    }

    /** Per-thread digest and the bytes of one chunk: previous key (big-endian) then token ids (little-endian). */
    private static final class Scratch {
        final MessageDigest digest = sha256();
        final byte[] bytes;
        final ByteBuffer buffer;
        /** Little-endian int view of the token part, so a chunk is encoded in one bulk copy. */
        final IntBuffer tokens;
        final byte[] out = new byte[32];

        Scratch(int chunkTokens) {
            bytes = new byte[16 + 4 * chunkTokens];
            buffer = ByteBuffer.wrap(bytes);
            tokens = ByteBuffer.wrap(bytes, 16, 4 * chunkTokens).slice().order(ByteOrder.LITTLE_ENDIAN).asIntBuffer();
        }
    }
}
