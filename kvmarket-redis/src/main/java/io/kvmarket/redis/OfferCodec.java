package io.kvmarket.redis;

import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;

import java.nio.BufferUnderflowException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.HexFormat;

/**
 * How an offer is stored in Redis. Each chunk has one string key, {@code <prefix>:r:{<key hex>}} (the braces make
 * the key its own Cluster hashtag, so every chunk's scripts touch one slot and chunks spread over the cluster),
 * holding the chunk's record: a header of four decimal longs (written as {@link Long#toString} writes them; read
 * with an optional '-' and 1 to 19 digits), then the publication's identity.
 *
 * <pre>
 * Record:   lease expiry "," pin count "," pin expiry "," last pinned ";" identity
 * Identity (little-endian, 77 bytes + endpoints):
 *   version 1 (1) | key hi (8) | key lo (8) | node id (8) | owner pid (8) | owner start (8) | generation (8)
 *   | chunk offset (8) | chunk length (8) | layout fingerprint (8) | endpoints length (4) | endpoints
 * </pre>
 *
 * One string per chunk, not a hash: a lookup of many chunks is then one {@code MGET}, which Redis answers without
 * running Lua per key. The identity holds everything {@link Offer#samePublication} compares, so scripts compare it
 * byte for byte. A record whose header is not exactly this, or any other type under the key, is foreign: never
 * trusted, never pinned, replaced by the next publication.
 */
final class OfferCodec {

    private static final byte VERSION = 1;
    private static final int FIXED = 1 + 9 * 8 + 4;
    /** Pin counts are kept below this, as the scripts keep them (Lua numbers are doubles). */
    static final long MAX_PINS = 999_999_999_999_999L;
    /** Digits of a pin count, at most: {@link #MAX_PINS} has as many. */
    static final int PIN_DIGITS = 15;

    private OfferCodec() {
    }

    static String hashKey(String prefix, ChunkKey key) {
        return prefix + ":r:{" + HexFormat.of().toHexDigits(key.hi()) + HexFormat.of().toHexDigits(key.lo()) + "}";
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
        return Long.toString(expiryMs).getBytes(StandardCharsets.US_ASCII);
    }

    /** The record of a fresh publication: lease, no pins, then the identity. */
    static byte[] record(Offer o) {
        byte[] id = identity(o);
        byte[] header = (o.leaseExpiryMs() + ",0,0,0;").getBytes(StandardCharsets.US_ASCII);
        byte[] r = Arrays.copyOf(header, header.length + id.length);
        System.arraycopy(id, 0, r, header.length, id.length);
        return r;
    }

    /**
     * A record's header fields (lease expiry, pin count, pin expiry, last pinned) and where its identity starts; null
     * when {@code record} is not one (foreign or damaged), judged as the scripts judge it.
     */
    static Header header(byte[] record) {
        long[] v = new long[4];
        int p = 0;
        for (int f = 0; f < 4; f++) {
            int start = p;
            p = number(record, p, v, f);
            if (p < 0 || p >= record.length || record[p] != (f < 3 ? ',' : ';')) {
                return null;
            }
            if (f == 1 && (record[start] == '-' || p - start > PIN_DIGITS)) {
                return null;
            }
            p++;
        }
        return new Header(v[0], v[1], v[2], v[3], p);
    }

    /**
     * Reads the long at {@code from} into {@code out[f]}: an optional '-' and 1 to 19 digits, within the range of a
     * long (as the scripts read it: leading zeros allowed); where it ends, or -1.
     */
    private static int number(byte[] b, int from, long[] out, int f) {
        int p = from;
        boolean negative = p < b.length && b[p] == '-';
        if (negative) {
            p++;
        }
        int first = p;
        long magnitude = 0; // negated, as Long.parseLong keeps it, so that Long.MIN_VALUE fits
        while (p < b.length && b[p] >= '0' && b[p] <= '9') {
            int d = b[p] - '0';
            if (p - first == 19 || magnitude < (Long.MIN_VALUE + d) / 10) {
                return -1;
            }
            magnitude = magnitude * 10 - d;
            p++;
        }
        if (p == first || !negative && magnitude == Long.MIN_VALUE) {
            return -1;
        }
        out[f] = negative ? magnitude : -magnitude;
        return p;
    }

    /** A record's header: lease expiry, pins, pin expiry, last pinned, and the offset of the identity. */
    record Header(long leaseExpiryMs, long pins, long pinExpiryMs, long lastPinnedMs, int identityAt) {

        byte[] identity(byte[] record) {
            return Arrays.copyOfRange(record, identityAt, record.length);
        }
    }

    /**
     * The offer a record holds for {@code key}, its identity read in place.
     *
     * @throws IllegalArgumentException when the bytes are not a record of this format for this key (foreign or
     *                                  damaged data)
     */
    static Offer decodeRecord(ChunkKey key, byte[] record) {
        Header h = header(record);
        if (h == null) {
            throw new IllegalArgumentException("not a kvmarket record (lease,pins,pin expiry,last pinned;identity)");
        }
        int at = h.identityAt();
        if (record.length - at < FIXED || record[at] != VERSION) {
            throw new IllegalArgumentException("not a kvmarket offer (format " + VERSION + ")");
        }
        try {
            ByteBuffer b = ByteBuffer.wrap(record, at + 1, record.length - at - 1).order(ByteOrder.LITTLE_ENDIAN);
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
            return new Offer(key, nodeId, owner, Endpoint.decode(record, at + FIXED, n), offset, length, fingerprint,
                    generation, h.leaseExpiryMs());
        } catch (BufferUnderflowException e) {
            throw new IllegalArgumentException("damaged offer: " + e, e);
        }
    }
}
