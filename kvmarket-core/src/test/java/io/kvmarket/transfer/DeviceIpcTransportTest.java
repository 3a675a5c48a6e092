package io.kvmarket.transfer;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.device.Device;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Offer;
import org.junit.jupiter.api.Test;

import java.lang.reflect.Proxy;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.atomic.AtomicInteger;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;

class DeviceIpcTransportTest {

    final AtomicInteger opens = new AtomicInteger();
    final AtomicInteger closes = new AtomicInteger();
    CompletableFuture<Void> pendingCopy = new CompletableFuture<>();

    final DeviceBuffer mapped = new DeviceBuffer() {
        public long size() {
            return 1 << 20;
        }

        public boolean isPeerMapping() {
            return true;
        }
    };

    /** A device whose copies finish only when the test says so, counting IPC opens and closes. */
    final Device device = (Device) Proxy.newProxyInstance(getClass().getClassLoader(), new Class<?>[] {Device.class},
            (proxy, method, args) -> switch (method.getName()) {
                case "openHandle" -> {
                    opens.incrementAndGet();
                    yield mapped;
                }
                case "closeHandle" -> {
                    closes.incrementAndGet();
                    yield null;
                }
                case "copy" -> pendingCopy;
                default -> null;
            });

    final Offer offer = new Offer(new ChunkKey(1, 2), 9, ProcessIdentity.current(), new byte[] {7}, 0, 4096, 1, 1,
            Long.MAX_VALUE);
    final CopyBatch batch = CopyBatch.builder().add(0, 0, 4096).build();

    @Test
    void mappingIsOpenedOnceAndReused() {
        DeviceIpcTransport t = new DeviceIpcTransport(device, 9);
        pendingCopy.complete(null);
        t.fetch(offer, mapped, batch).join();
        t.fetch(offer, mapped, batch).join();
        assertEquals(1, opens.get());
        assertEquals(1, t.cachedMappings());
    }

    @Test
    void mappingInUseIsUnmappedOnlyAfterItsCopyCompletes() {
        DeviceIpcTransport t = new DeviceIpcTransport(device, 9);
        CompletableFuture<Void> fetch = t.fetch(offer, mapped, batch);
        t.close();
        assertEquals(0, closes.get(), "a running copy still reads the mapping");
        assertFalse(fetch.isDone());
        pendingCopy.complete(null);
        fetch.join();
        assertEquals(1, closes.get());
    }

    @Test
    void idleMappingIsUnmappedAtClose() {
        DeviceIpcTransport t = new DeviceIpcTransport(device, 9);
        pendingCopy.complete(null);
        t.fetch(offer, mapped, batch).join();
        t.close();
        assertEquals(1, closes.get());
    }

    @Test
    void offersOfOtherNodesAreNotReached() {
        DeviceIpcTransport t = new DeviceIpcTransport(device, 9);
        assertEquals(true, t.reaches(offer));
        assertEquals(false, new DeviceIpcTransport(device, 10).reaches(offer));
    }
}
