package io.kvmarket.transfer;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.device.Device;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.device.DeviceException;
import io.kvmarket.device.DeviceUnreachableException;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;
import org.junit.jupiter.api.Test;

import java.lang.reflect.Proxy;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class DeviceIpcTransportTest {

    final AtomicInteger opens = new AtomicInteger();
    final AtomicInteger closes = new AtomicInteger();
    CompletableFuture<Void> pendingCopy = new CompletableFuture<>();
    RuntimeException openFailure;

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
                    if (openFailure != null) {
                        throw openFailure;
                    }
                    yield mapped;
                }
                case "closeHandle" -> {
                    closes.incrementAndGet();
                    yield null;
                }
                case "copy" -> pendingCopy;
                default -> null;
            });

    final Offer offer = Offer.of(new ChunkKey(1, 2), 9, ProcessIdentity.current(),
            new Endpoint(Endpoint.DEVICE_IPC, new byte[] {7}), 0, 4096, 1, 1, Long.MAX_VALUE);
    final CopyBatch batch = CopyBatch.builder().add(0, 0, 4096).build();

    @Test
    void mappingIsOpenedOnceAndReused() {
        DeviceIpcTransport t = new DeviceIpcTransport(device, 9, 1_000);
        pendingCopy.complete(null);
        t.fetch(List.of(offer), mapped, batch).join();
        t.fetch(List.of(offer), mapped, batch).join();
        assertEquals(1, opens.get());
        assertEquals(1, t.cachedMappings());
    }

    @Test
    void mappingInUseIsUnmappedOnlyAfterItsCopyCompletes() {
        DeviceIpcTransport t = new DeviceIpcTransport(device, 9, 1_000);
        CompletableFuture<Void> fetch = t.fetch(List.of(offer), mapped, batch);
        t.close();
        assertEquals(0, closes.get(), "a running copy still reads the mapping");
        assertFalse(fetch.isDone());
        pendingCopy.complete(null);
        fetch.join();
        assertEquals(1, closes.get());
    }

    @Test
    void idleMappingIsUnmappedAtClose() {
        DeviceIpcTransport t = new DeviceIpcTransport(device, 9, 1_000);
        pendingCopy.complete(null);
        t.fetch(List.of(offer), mapped, batch).join();
        t.close();
        assertEquals(1, closes.get());
    }

    @Test
    void mappingUnusedForTheIdleLimitIsUnmappedAndReopenedOnNextUse() {
        AtomicLong now = new AtomicLong();
        DeviceIpcTransport t = new DeviceIpcTransport(device, 9, 1_000, now::get);
        pendingCopy.complete(null);
        t.fetch(List.of(offer), mapped, batch).join();
        now.addAndGet(TimeUnit.MILLISECONDS.toNanos(999));
        t.evictStale();
        assertEquals(0, closes.get(), "used 999 ms ago, within the limit");
        now.addAndGet(TimeUnit.MILLISECONDS.toNanos(1));
        t.evictStale();
        assertEquals(1, closes.get());
        assertEquals(0, t.cachedMappings());
        t.fetch(List.of(offer), mapped, batch).join();
        assertEquals(2, opens.get(), "an import after the unmap maps the buffer afresh");
    }

    @Test
    void mappingInUseIsNeverUnmappedForIdleness() {
        AtomicLong now = new AtomicLong();
        DeviceIpcTransport t = new DeviceIpcTransport(device, 9, 1_000, now::get);
        CompletableFuture<Void> fetch = t.fetch(List.of(offer), mapped, batch);
        now.addAndGet(TimeUnit.SECONDS.toNanos(10));
        t.evictStale();
        assertEquals(0, closes.get(), "a running copy still reads the mapping");
        pendingCopy.complete(null);
        fetch.join();
        t.evictStale();
        assertEquals(0, closes.get(), "idleness counts from the end of the last copy");
        now.addAndGet(TimeUnit.SECONDS.toNanos(1));
        t.evictStale();
        assertEquals(1, closes.get());
    }

    @Test
    void everyMappingOpenedIsClosedOnceUnderConcurrentImportsAndEviction() throws InterruptedException {
        AtomicLong now = new AtomicLong();
        DeviceIpcTransport t = new DeviceIpcTransport(device, 9, 1, now::get);
        pendingCopy.complete(null);
        AtomicBoolean stop = new AtomicBoolean();
        List<Thread> importers = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            Thread w = new Thread(() -> {
                while (!stop.get()) {
                    t.fetch(List.of(offer), mapped, batch).join();
                }
            });
            w.start();
            importers.add(w);
        }
        long end = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(500);
        while (System.nanoTime() < end) {
            now.addAndGet(TimeUnit.MILLISECONDS.toNanos(10)); // every mapping is idle at every pass
            t.evictStale();
        }
        stop.set(true);
        for (Thread w : importers) {
            w.join();
        }
        t.close();
        assertTrue(opens.get() > 1, "eviction and reopening actually raced");
        assertEquals(opens.get(), closes.get(), "a mapping was leaked or unmapped twice");
    }

    @Test
    void fetchAfterCloseIsAProgrammingError() {
        DeviceIpcTransport t = new DeviceIpcTransport(device, 9, 1_000);
        t.close();
        assertThrows(IllegalStateException.class, () -> t.fetch(List.of(offer), mapped, batch));
        assertEquals(0, opens.get());
    }

    @Test
    void mappingOfDeadPeerIsUnmapped() {
        Offer ofDead = Offer.of(new ChunkKey(1, 2), 9, new ProcessIdentity(ProcessIdentity.current().pid(),
                ProcessIdentity.current().startTime() + 1), new Endpoint(Endpoint.DEVICE_IPC, new byte[] {8}), 0, 4096, 1,
                1, Long.MAX_VALUE);
        DeviceIpcTransport t = new DeviceIpcTransport(device, 9, 1_000);
        pendingCopy.complete(null);
        t.fetch(List.of(ofDead), mapped, batch).join();
        t.fetch(List.of(offer), mapped, batch).join();
        t.evictStale();
        assertEquals(1, closes.get());
        assertEquals(1, t.cachedMappings(), "the live peer's mapping stays");
    }

    @Test
    void unmappableBuffersBecomeMissesWithTheirReason() {
        DeviceIpcTransport t = new DeviceIpcTransport(device, 9, 1_000);
        openFailure = new DeviceUnreachableException("GPU 0000:1b:00.0 has no peer path to this GPU");
        assertEquals(TransferFailure.UNREACHABLE, failure(t.fetch(List.of(offer), mapped, batch)));
        openFailure = new DeviceException("allocation freed");
        assertEquals(TransferFailure.SOURCE_GONE, failure(t.fetch(List.of(offer), mapped, batch)));
        openFailure = new IllegalArgumentException("bad magic");
        assertEquals(TransferFailure.MALFORMED, failure(t.fetch(List.of(offer), mapped, batch)));
        assertEquals(0, t.cachedMappings());
    }

    private static TransferFailure failure(CompletableFuture<Void> fetch) {
        CompletionException e = assertThrows(CompletionException.class, fetch::join);
        return ((TransferException) e.getCause()).failure();
    }

    @Test
    void routesOnlyToOffersOfItsNodeThatCarryAnIpcHandle() {
        DeviceIpcTransport t = new DeviceIpcTransport(device, 9, 1_000);
        assertEquals(Locality.SAME_PROCESS, t.route(offer).orElseThrow().locality());
        Offer ofPeer = Offer.of(offer.key(), 9, new ProcessIdentity(1, 1), offer.endpoints().get(0), 0, 4096, 1, 1,
                Long.MAX_VALUE);
        assertEquals(Locality.SAME_NODE, t.route(ofPeer).orElseThrow().locality());
        assertTrue(new DeviceIpcTransport(device, 10, 1_000).route(offer).isEmpty(), "another node");
        Offer tcpOnly = Offer.of(offer.key(), 9, ProcessIdentity.current(), new Endpoint(Endpoint.TCP, new byte[] {1}),
                0, 4096, 1, 1, Long.MAX_VALUE);
        assertTrue(t.route(tcpOnly).isEmpty(), "no IPC endpoint");
        assertEquals(TransferFailure.UNREACHABLE, failure(t.fetch(List.of(tcpOnly), mapped, batch)));
    }
}
