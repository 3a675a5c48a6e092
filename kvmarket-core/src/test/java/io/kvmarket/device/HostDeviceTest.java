package io.kvmarket.device;

import io.kvmarket.device.host.HostBuffer;
import io.kvmarket.device.host.HostDevice;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.concurrent.CompletableFuture;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class HostDeviceTest {

    @TempDir
    Path dir;
    HostDevice a;
    HostDevice b;

    @BeforeEach
    void open() {
        a = new HostDevice(dir);
        b = new HostDevice(dir);
    }

    @AfterEach
    void close() {
        a.close();
        b.close();
    }

    static void fill(DeviceBuffer buf, int seed) {
        ByteBuffer m = ((HostBuffer) buf).memory();
        for (int i = 0; i < buf.size(); i++) {
            m.put(i, (byte) (i * 31 + seed));
        }
    }

    static byte[] bytes(DeviceBuffer buf, int offset, int len) {
        byte[] out = new byte[len];
        ((HostBuffer) buf).memory().get(offset, out);
        return out;
    }

    @Test
    void handleOpensThePeersMemoryInAnotherDevice() {
        DeviceBuffer src = a.allocate(4096);
        fill(src, 7);
        DeviceBuffer mapped = b.openHandle(a.exportHandle(src));
        assertTrue(mapped.isPeerMapping());
        assertEquals(4096, mapped.size());
        DeviceBuffer dst = b.allocate(4096);
        b.copy(mapped, dst, CopyBatch.builder().add(100, 0, 200).add(1000, 3000, 96).build()).join();
        assertArrayEquals(bytes(src, 100, 200), bytes(dst, 0, 200));
        assertArrayEquals(bytes(src, 1000, 96), bytes(dst, 3000, 96));
    }

    @Test
    void ownHandleReturnsTheAllocationItself() {
        DeviceBuffer buf = a.allocate(64);
        assertSame(buf, a.openHandle(a.exportHandle(buf)));
    }

    @Test
    void malformedHandlesAreRejectedClearly() {
        byte[] good = a.exportHandle(a.allocate(64));
        assertThrows(IllegalArgumentException.class, () -> b.openHandle(null));
        assertThrows(IllegalArgumentException.class, () -> b.openHandle(Arrays.copyOf(good, 20)));
        assertThrows(IllegalArgumentException.class, () -> b.openHandle(new byte[HostDevice.HANDLE_BYTES]));
        for (int i = 0; i < good.length; i++) {
            byte[] corrupt = good.clone();
            corrupt[i] ^= 0x40;
            int at = i;
            assertThrows(IllegalArgumentException.class, () -> b.openHandle(corrupt), "flipped byte " + at);
        }
    }

    @Test
    void freedAllocationIsGoneForPeers() throws Exception {
        DeviceBuffer buf = a.allocate(64);
        byte[] handle = a.exportHandle(buf);
        a.free(buf);
        assertThrows(DeviceException.class, () -> b.openHandle(handle));
        try (var files = Files.list(dir.resolve("host-device"))) {
            assertEquals(0, files.count());
        }
    }

    @Test
    void outOfBoundsBatchCopiesNothing() {
        DeviceBuffer src = a.allocate(128);
        DeviceBuffer dst = a.allocate(128);
        fill(src, 1);
        CopyBatch batch = CopyBatch.builder().add(0, 0, 64).add(100, 100, 64).build();
        assertThrows(IllegalArgumentException.class, () -> a.copy(src, dst, batch));
        assertArrayEquals(new byte[128], bytes(dst, 0, 128));
    }

    @Test
    void peerMappingsAreReadOnly() {
        DeviceBuffer mapped = b.openHandle(a.exportHandle(a.allocate(64)));
        DeviceBuffer local = b.allocate(64);
        assertThrows(IllegalArgumentException.class,
                () -> b.copy(local, mapped, CopyBatch.builder().add(0, 0, 8).build()));
    }

    @Test
    void allocationSizesOutOfRangeAreRejected() {
        assertThrows(IllegalArgumentException.class, () -> a.allocate(0));
        assertThrows(IllegalArgumentException.class, () -> a.allocate(-5));
        assertThrows(IllegalArgumentException.class, () -> a.allocate(HostDevice.MAX_ALLOCATION + 1));
    }

    @Test
    void copiesCompleteInSubmissionOrder() {
        DeviceBuffer src = a.allocate(1 << 20);
        DeviceBuffer dst = a.allocate(1 << 20);
        fill(src, 3);
        CompletableFuture<Void> first = a.copy(src, dst, CopyBatch.builder().add(0, 0, 1 << 20).build());
        CompletableFuture<Void> second = a.copy(dst, src, CopyBatch.builder().add(0, 0, 16).build());
        second.join();
        assertTrue(first.isDone());
        assertFalse(first.isCompletedExceptionally());
    }

    @Test
    void closingTheDeviceDeletesItsMemoryFiles() throws Exception {
        a.allocate(64);
        a.allocate(64);
        a.close();
        try (var files = Files.list(dir.resolve("host-device"))) {
            assertEquals(0, files.count());
        }
    }
}
