package io.kvmarket.registry;

import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.ProcessIdentity;

import java.util.List;
import java.util.Optional;

/**
 * A registry entry: where the KV of one chunk lives and how to reach it.
 *
 * @param key               the chunk key
 * @param nodeId            node that holds the chunk ({@link io.kvmarket.node.NodeId})
 * @param owner             process that exported it
 * @param endpoints         one per transport that reaches the owner's pool buffer, kinds distinct; encoded, at
 *                          most {@value #MAX_ENDPOINT_BYTES} bytes together
 * @param offset            byte offset of the chunk inside that buffer
 * @param length            bytes of the chunk
 * @param layoutFingerprint fingerprint of the KV layout the bytes are in
 * @param generation        unique per publication by this owner process for its whole life, however many pools it
 *                          runs; changes whenever the memory is reused
 * @param leaseExpiryMs     epoch milliseconds after which the offer is no longer served unless renewed
 */
public record Offer(ChunkKey key, long nodeId, ProcessIdentity owner, List<Endpoint> endpoints, long offset,
                    long length, long layoutFingerprint, long generation, long leaseExpiryMs) {

    /** Room for a framed CUDA IPC handle (124 bytes), a network address and an RDMA key with their headers. */
    public static final int MAX_ENDPOINT_BYTES = 384;

    public Offer {
        if (key == null || owner == null || endpoints == null) {
            throw new IllegalArgumentException("key, owner and endpoints are required");
        }
        endpoints = List.copyOf(endpoints);
        if (endpoints.isEmpty()) {
            throw new IllegalArgumentException("an offer needs at least one endpoint");
        }
        int size = 0;
        for (int i = 0; i < endpoints.size(); i++) {
            size += endpoints.get(i).encodedSize();
            for (int j = 0; j < i; j++) { // a handful at most: no set needed on the lookup path
                if (endpoints.get(j).kind() == endpoints.get(i).kind()) {
                    throw new IllegalArgumentException("two endpoints of kind " + endpoints.get(i).kind());
                }
            }
        }
        if (size > MAX_ENDPOINT_BYTES) {
            throw new IllegalArgumentException("endpoints take " + size + " bytes, more than " + MAX_ENDPOINT_BYTES);
        }
        if (offset < 0 || length <= 0) {
            throw new IllegalArgumentException("bad chunk span: offset " + offset + ", length " + length);
        }
    }

    /** The offer with a single endpoint. */
    public static Offer of(ChunkKey key, long nodeId, ProcessIdentity owner, Endpoint endpoint, long offset,
                           long length, long layoutFingerprint, long generation, long leaseExpiryMs) {
        return new Offer(key, nodeId, owner, List.of(endpoint), offset, length, layoutFingerprint, generation,
                leaseExpiryMs);
    }

    /** The endpoint of {@code kind}, if a transport of that kind reaches this offer. */
    public Optional<Endpoint> endpoint(int kind) {
        for (Endpoint e : endpoints) {
            if (e.kind() == kind) {
                return Optional.of(e);
            }
        }
        return Optional.empty();
    }

    /**
     * Same publication: same key, owner and generation, at the same place (node, endpoints, offset) and of the same
     * bytes (length, layout): everything but the lease, which renewals change. The place is part of the identity so
     * that memory reused for something else can never pass for a republication.
     */
    public boolean samePublication(Offer other) {
        return key.equals(other.key) && owner.equals(other.owner) && generation == other.generation
                && nodeId == other.nodeId && offset == other.offset && length == other.length
                && layoutFingerprint == other.layoutFingerprint && endpoints.equals(other.endpoints);
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof Offer other && samePublication(other) && leaseExpiryMs == other.leaseExpiryMs;
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
