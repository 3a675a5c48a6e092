package io.kvmarket.nvlink;

import io.kvmarket.node.ProcessIdentity;
import org.junit.jupiter.api.Test;

import java.util.Arrays;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

class CudaIpcHandleTest {

    static CudaIpcHandle sample() {
        byte[] cuda = new byte[CudaIpcHandle.CUDA_HANDLE_BYTES];
        for (int i = 0; i < cuda.length; i++) {
            cuda[i] = (byte) (i * 13 + 5);
        }
        return new CudaIpcHandle(new ProcessIdentity(4242, 1_700_000_000_000L), 17, 1L << 30, "00000000:1B:00.0", cuda);
    }

    @Test
    void roundTripsEveryField() {
        CudaIpcHandle h = sample();
        byte[] bytes = h.encode();
        assertEquals(CudaIpcHandle.BYTES, bytes.length);
        CudaIpcHandle back = CudaIpcHandle.decode(bytes);
        assertEquals(h.owner(), back.owner());
        assertEquals(17, back.allocationId());
        assertEquals(1L << 30, back.size());
        assertEquals("00000000:1B:00.0", back.pciBusId());
        assertArrayEquals(h.cudaHandle(), back.cudaHandle());
    }

    @Test
    void fitsInARegistrySlot() {
        assertEquals(true, CudaIpcHandle.BYTES <= io.kvmarket.registry.Endpoint.MAX_BYTES);
    }

    @Test
    void everyCorruptedByteIsRejectedBeforeCudaSeesIt() {
        byte[] good = sample().encode();
        for (int i = 0; i < good.length; i++) {
            byte[] bad = good.clone();
            bad[i] ^= 0x10;
            int at = i;
            assertThrows(IllegalArgumentException.class, () -> CudaIpcHandle.decode(bad), "flipped byte " + at);
        }
    }

    @Test
    void truncatedOrForeignBytesAreRejected() {
        byte[] good = sample().encode();
        assertThrows(IllegalArgumentException.class, () -> CudaIpcHandle.decode(null));
        assertThrows(IllegalArgumentException.class, () -> CudaIpcHandle.decode(Arrays.copyOf(good, 64)));
        assertThrows(IllegalArgumentException.class, () -> CudaIpcHandle.decode(new byte[CudaIpcHandle.BYTES]));
        assertThrows(IllegalArgumentException.class,
                () -> new CudaIpcHandle(sample().owner(), 1, 1, "0000:1b:00.0", new byte[63]));
    }

    @Test
    void shortBusIdsRoundTripAndMalformedOnesAreRejected() {
        CudaIpcHandle h = new CudaIpcHandle(sample().owner(), 1, 1, "0000:1b:00.0", sample().cudaHandle());
        assertEquals("0000:1b:00.0", CudaIpcHandle.decode(h.encode()).pciBusId());
        for (String bad : new String[] {null, "", "GPU-0", "0000:1b:00", "000000000:1b:00.0", "0000:1b:00.0\0x"}) {
            assertThrows(IllegalArgumentException.class,
                    () -> new CudaIpcHandle(sample().owner(), 1, 1, bad, sample().cudaHandle()), String.valueOf(bad));
        }
    }
}
