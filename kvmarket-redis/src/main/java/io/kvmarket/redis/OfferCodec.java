package io.kvmarket.redis;

import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;

import java.nio.BufferUnderflowException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.HexFormat;

/**
 * How an offer is stored in Redis. Each chunk has one hash, {@code <prefix>:{<key hex>}} (the braces make the key
 * its own Cluster hashtag, so every chunk's scripts touch one slot and chunks spread over the cluster), with the
 * field {@code o}, a publication's identity, and {@code l}, its lease expiry; pins live beside them (see
 * {@link RedisRegistry}).
 *
 * <pre>
 * Identity (little-endian, 77 bytes + endpoints):
 *   version 1 (1) | key hi (8) | key lo (8) | node id (8) | owner pid (8) | owner start (8) | generation (8)
 *   | chunk offset (8) | chunk length (8) | layout fingerprint (8) | endpoints length (4) | endpoints
 * </pre>
 *
 * The identity holds everything {@link Offer#samePublication} compares, so scripts compare it byte for byte; the
 * lease is apart because renewing changes it. Anything else found under the prefix is foreign and never trusted.
 */
final class OfferCodec {

    private static final byte VERSION = 1;
    private static final int FIXED = 1 + 9 * 8 + 4;

    private OfferCodec() {
    }

    static String hashKey(String prefix, ChunkKey key) {
        return prefix + ":{" + HexFormat.of().toHexDigits(key.hi()) + HexFormat.of().toHexDigits(key.lo()) + "}";
    }

    static String ownerKey(String prefix, long nodeId, ProcessIdentity owner) {
        return prefix + ":owner:" + Long.toHexString(nodeId) + ":" + owner.pid() + ":" + owner.startTime();
    }

    static byte[] identity(Offer o) {
        byte[] endpoints = Endpoint.encode(o.endpoints());
        ByteBuffer b = ByteBuffer.allocate(FIXED + endpoints.length).order(ByteOrder.LITTLE_ENDIAN);
        b.put(VERSION).putLong(o.key().hi()).putLong(o.key().lo()).putLong(o.nodeId()).putLong(o.owner().pid())
                .putLong(o.owner().startTime()).putLong(o.generation()).putLong(o.offset()).putLong(o.length())
                .putLong(o.layoutFingerprint()).putInt(endpoints.length).put(endpoints);
        return b.array();
    }

    static byte[] lease(long expiryMs) {
        return Long.toString(expiryMs).getBytes(java.nio.charset.StandardCharsets.US_ASCII);
    }

    /**
     * The offer stored for {@code key}.
     *
     * @throws IllegalArgumentException when the bytes are not an offer of this format for this key (foreign or
     *                                  damaged data)
     */
    static Offer decode(ChunkKey key, byte[] identity, byte[] lease) {
        if (identity == null || lease == null || identity.length < FIXED || identity[0] != VERSION) {
            throw new IllegalArgumentException("not a kvmarket offer (format " + VERSION + ")");
        }
        try {
            ByteBuffer b = ByteBuffer.wrap(identity).order(ByteOrder.LITTLE_ENDIAN);
            b.get();
            ChunkKey stored = new ChunkKey(b.getLong(), b.getLong());
            if (!stored.equals(key)) {
                throw new IllegalArgumentException("offer of " + stored + " stored under " + key);
            }
            long nodeId = b.getLong();
            ProcessIdentity owner = new ProcessIdentity(b.getLong(), b.getLong());
            long generation = b.getLong();
            long offset = b.getLong();
            long length = b.getLong();
            long fingerprint = b.getLong();
            int n = b.getInt();
            if (n != b.remaining()) {
                throw new IllegalArgumentException("endpoints of " + n + " bytes in " + b.remaining());
            }
            long expiry = Long.parseLong(new String(lease, java.nio.charset.StandardCharsets.US_ASCII));
            return new Offer(key, nodeId, owner, Endpoint.decode(identity, FIXED, n), offset, length, fingerprint,
                    generation, expiry);
        } catch (BufferUnderflowException | NumberFormatException e) {
            throw new IllegalArgumentException("damaged offer: " + e, e);
        }
    }
}
