package io.kvmarket.registry;

import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.ProcessIdentity;

import java.util.Arrays;

/**
 * A registry entry: where the KV of one chunk lives and how to reach it.
 *
 * @param key               the chunk key
 * @param nodeId            node that holds the chunk ({@link io.kvmarket.node.NodeId})
 * @param owner             process that exported it
 * @param handle            device IPC handle of the owner's export-pool buffer (opaque; at most 128 bytes)
 * @param offset            byte offset of the chunk inside that buffer
 * @param length            bytes of the chunk
 * @param layoutFingerprint fingerprint of the KV layout the bytes are in
 * @param generation        unique per publication by this owner process for its whole life, however many pools it
 *                          runs; changes whenever the memory is reused
 * @param leaseExpiryMs     epoch milliseconds after which the offer is no longer served unless renewed
 */
public record Offer(ChunkKey key, long nodeId, ProcessIdentity owner, byte[] handle, long offset, long length,
                    long layoutFingerprint, long generation, long leaseExpiryMs) {

    public static final int MAX_HANDLE_BYTES = 128;

    public Offer {
        if (key == null || owner == null || handle == null) {
            throw new IllegalArgumentException("key, owner and handle are required");
        }
        if (handle.length == 0 || handle.length > MAX_HANDLE_BYTES) {
            throw new IllegalArgumentException("handle of " + handle.length + " bytes outside [1, " + MAX_HANDLE_BYTES + "]");
        }
        if (offset < 0 || length <= 0) {
            throw new IllegalArgumentException("bad chunk span: offset " + offset + ", length " + length);
        }
        handle = handle.clone();
    }

    @Override
    public byte[] handle() {
        return handle.clone();
    }

    /**
     * Same publication: same key, owner and generation, at the same place (node, buffer handle, offset). The place
     * is part of the identity so that memory reused for something else can never pass for a republication.
     */
    public boolean samePublication(Offer other) {
        return key.equals(other.key) && owner.equals(other.owner) && generation == other.generation
                && nodeId == other.nodeId && offset == other.offset && Arrays.equals(handle, other.handle);
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof Offer other && samePublication(other) && length == other.length
                && layoutFingerprint == other.layoutFingerprint && leaseExpiryMs == other.leaseExpiryMs;
    }

    @Override
    public int hashCode() {
        return key.hashCode() * 31 + Long.hashCode(generation);
    }

    @Override
    public String toString() {
        return "Offer[" + key + " from pid " + owner.pid() + " gen " + generation + " @" + offset + "+" + length + "]";
    }
}
