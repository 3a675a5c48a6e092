package io.kvmarket.registry;

import org.junit.jupiter.api.Test;

import java.util.Arrays;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The endpoint list's encoding: what readers of damaged shared slots accept is exactly what offers accept. */
class EndpointTest {

    private static final List<Endpoint> TWO = List.of(new Endpoint(Endpoint.DEVICE_IPC, new byte[] {1, 2, 3}),
            new Endpoint(Endpoint.TCP, new byte[Endpoint.MAX_BYTES]));

    @Test
    void aListRoundTripsAndIsAcceptable() {
        byte[] e = Endpoint.encode(TWO);
        assertEquals(TWO, Endpoint.decode(e, 0, e.length));
        assertTrue(Endpoint.isEncodingOf(TWO, e, 0, e.length));
        assertTrue(Endpoint.isAcceptableEncoding(e, 0, e.length));
    }

    @Test
    void everyTruncationIsRefused() {
        byte[] e = Endpoint.encode(TWO);
        int first = TWO.get(0).encodedSize();
        for (int n = 1; n < e.length; n++) {
            assertEquals(n == first, Endpoint.isAcceptableEncoding(e, 0, n), "length " + n);
        }
    }

    @Test
    void zeroKindsEmptyEntriesAndRepeatedKindsAreRefused() {
        byte[] e = Endpoint.encode(TWO);
        byte[] zeroKind = e.clone();
        zeroKind[0] = 0;
        assertFalse(Endpoint.isAcceptableEncoding(zeroKind, 0, zeroKind.length));
        byte[] empty = {(byte) Endpoint.TCP, 0, 0};
        assertFalse(Endpoint.isAcceptableEncoding(empty, 0, empty.length));
        byte[] one = Endpoint.encode(TWO.subList(0, 1));
        byte[] twice = Arrays.copyOf(one, 2 * one.length);
        System.arraycopy(one, 0, twice, one.length, one.length);
        assertFalse(Endpoint.isAcceptableEncoding(twice, 0, twice.length));
        byte[] oversized = {(byte) Endpoint.TCP, 0, 1};
        byte[] big = Arrays.copyOf(oversized, 3 + 256);
        assertFalse(Endpoint.isAcceptableEncoding(big, 0, big.length));
    }
}
