package io.kvmarket.registry;

import java.io.ByteArrayOutputStream;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Where one transport reaches an exported pool: a kind that names the transport, and bytes only that transport
 * understands (a device IPC handle; later a TCP address, an RDMA address with its key). An offer carries one
 * endpoint per transport that can reach its chunk, so the same chunk is read by IPC on its node and over the
 * network from elsewhere.
 *
 * <pre>
 * Encoded list (little-endian), as registries store it:
 *   per endpoint: kind (1) | length (2) | bytes (length)
 * </pre>
 *
 * @param kind  {@link #DEVICE_IPC}, {@link #TCP} or {@link #RDMA}
 * @param bytes the transport's own description of the pool, 1 to {@value #MAX_BYTES} bytes
 */
public record Endpoint(int kind, byte[] bytes) {

    /** A device IPC handle: CUDA IPC, or the host device's shared-memory file. */
    public static final int DEVICE_IPC = 1;
    public static final int TCP = 2;
    public static final int RDMA = 3;
    public static final int MAX_BYTES = 255;

    public Endpoint {
        if (kind < 1 || kind > 255) {
            throw new IllegalArgumentException("endpoint kind " + kind + " outside [1, 255]");
        }
        if (bytes == null || bytes.length == 0 || bytes.length > MAX_BYTES) {
            throw new IllegalArgumentException("endpoint of " + (bytes == null ? "null" : bytes.length)
                    + " bytes outside [1, " + MAX_BYTES + "]");
        }
        bytes = bytes.clone();
    }

    @Override
    public byte[] bytes() {
        return bytes.clone();
    }

    /** Bytes this endpoint takes in an encoded list. */
    public int encodedSize() {
        return 3 + bytes.length;
    }

    public static byte[] encode(List<Endpoint> endpoints) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        for (Endpoint e : endpoints) {
            out.write(e.kind);
            out.write(e.bytes.length & 0xff);
            out.write(e.bytes.length >>> 8);
            out.writeBytes(e.bytes);
        }
        return out.toByteArray();
    }

    /**
     * Decodes {@code length} bytes at {@code offset} of {@code encoded}.
     *
     * @throws IllegalArgumentException when they are not a well-formed list (truncated, empty entries)
     */
    public static List<Endpoint> decode(byte[] encoded, int offset, int length) {
        List<Endpoint> out = new ArrayList<>(2);
        int p = offset;
        int end = offset + length;
        while (p < end) {
            if (end - p < 3) {
                throw new IllegalArgumentException("endpoint list truncated at byte " + (p - offset));
            }
            int kind = encoded[p] & 0xff;
            int len = (encoded[p + 1] & 0xff) | (encoded[p + 2] & 0xff) << 8;
            if (len > end - p - 3) {
                throw new IllegalArgumentException("endpoint of " + len + " bytes runs past the list");
            }
            out.add(new Endpoint(kind, Arrays.copyOfRange(encoded, p + 3, p + 3 + len)));
            p += 3 + len;
        }
        return out;
    }

    /**
     * True when {@code length} bytes at {@code offset} of {@code encoded} decode to endpoints an offer accepts (no
     * truncation, no empty or oversized entry, each kind once); allocates nothing, for readers that check every slot.
     */
    public static boolean isAcceptableEncoding(byte[] encoded, int offset, int length) {
        long[] kinds = new long[4];
        int p = offset;
        int end = offset + length;
        while (p < end) {
            if (end - p < 3) {
                return false;
            }
            int kind = encoded[p] & 0xff;
            int len = (encoded[p + 1] & 0xff) | (encoded[p + 2] & 0xff) << 8;
            if (kind == 0 || len == 0 || len > MAX_BYTES || len > end - p - 3
                    || (kinds[kind >>> 6] & 1L << kind) != 0) {
                return false;
            }
            kinds[kind >>> 6] |= 1L << kind;
            p += 3 + len;
        }
        return true;
    }

    /** True when {@code length} bytes at {@code offset} of {@code encoded} are {@code endpoints} encoded; allocates nothing. */
    public static boolean isEncodingOf(List<Endpoint> endpoints, byte[] encoded, int offset, int length) {
        int p = offset;
        int end = offset + length;
        for (Endpoint e : endpoints) {
            int n = e.bytes.length;
            if (end - p < 3 + n || (encoded[p] & 0xff) != e.kind || (encoded[p + 1] & 0xff) != (n & 0xff)
                    || (encoded[p + 2] & 0xff) != n >>> 8
                    || !Arrays.equals(encoded, p + 3, p + 3 + n, e.bytes, 0, n)) {
                return false;
            }
            p += 3 + n;
        }
        return p == end;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof Endpoint e && kind == e.kind && Arrays.equals(bytes, e.bytes);
    }

    @Override
    public int hashCode() {
        return kind * 31 + Arrays.hashCode(bytes);
    }

    @Override
    public String toString() {
        return "Endpoint[kind " + kind + ", " + bytes.length + " bytes]";
    }
}
