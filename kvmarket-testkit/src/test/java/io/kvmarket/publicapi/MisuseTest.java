package io.kvmarket.publicapi;

import io.kvmarket.device.Device;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.pool.ExportPool;
import io.kvmarket.registry.InProcessRegistry;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.testkit.ChildJvm;
import io.kvmarket.testkit.DeviceBytes;
import io.kvmarket.testkit.RegistryContractTest;
import io.kvmarket.testkit.TransportContractTest;
import io.kvmarket.testkit.FaultyTransport;
import io.kvmarket.transfer.DeviceIpcTransport;
import io.kvmarket.transfer.Transport;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.time.Duration;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

@Timeout(60)
class MisuseTest {

    @TempDir
    Path dir;

    static Offer offer(long gen, long offset) {
        return Offer.of(new ChunkKey(9, gen), 7, ProcessIdentity.current(), RegistryContractTest.ipc(1, 2), offset, 64,
                1, gen, Long.MAX_VALUE);
    }

    @Test
    void reservationMisuseIsRefused() {
        try (HostDevice device = new HostDevice(dir); InProcessRegistry registry = new InProcessRegistry()) {
            ExportPool pool = new ExportPool(device, registry, 4 * 64, 64);
            try (ExportPool.Reservation zero = pool.reserve(0)) {
                assertEquals(0, zero.size());
            }
            ExportPool.Reservation r = pool.reserve(2);
            Offer o = offer(1, r.offset(0));
            registry.publish(o);
            r.published(0, o);
            assertThrows(IllegalStateException.class, () -> r.published(0, o), "published twice");
            r.close();
            r.close();
            assertThrows(IllegalStateException.class, () -> r.published(1, offer(2, r.offset(1))), "after close");
            assertEquals(1, pool.publishedChunks());
            // everything not published went back: 3 free slots
            try (ExportPool.Reservation rest = pool.reserve(3)) {
                assertEquals(3, rest.size());
            }
            assertThrows(IllegalArgumentException.class, () -> pool.reserve(-1), "a negative reservation");
            pool.close();
        }
    }

    /** A closed pool (its memory freed) must not hand out slots of that memory. */
    @Test
    void aClosedPoolReservesNothing() {
        try (HostDevice device = new HostDevice(dir); InProcessRegistry registry = new InProcessRegistry()) {
            ExportPool pool = new ExportPool(device, registry, 4 * 64, 64);
            pool.close();
            int got;
            try (ExportPool.Reservation r = pool.reserve(2)) {
                got = r.size();
                if (got > 0) {
                    Offer o = offer(5, r.offset(0));
                    registry.publish(o);
                    r.published(0, o);
                }
            } catch (IllegalStateException refused) {
                return;
            }
            assertEquals(0, got, "a closed pool reserved " + got + " chunks of freed memory, and recorded a "
                    + "publication that nothing will withdraw (pool.close() is idempotent): "
                    + pool.publishedChunks());
        }
    }

    /** Prints "ONE" after a delay, then "TWO", then waits for stdin to close. */
    public static final class Child {
        public static void main(String[] args) throws Exception {
            Thread.sleep(1500);
            System.out.println("ONE");
            System.out.flush();
            Thread.sleep(300);
            System.out.println("TWO");
            System.out.flush();
            while (System.in.read() >= 0) {
                // until stdin closes
            }
        }
    }

    /**
     * An awaitLine that timed out loses no line: a later awaitLine still sees every line the child printed.
     */
    @Test
    void aTimedOutAwaitLineDoesNotSwallowLaterLines() throws Exception {
        try (ChildJvm child = ChildJvm.start(Child.class)) {
            assertThrows(IllegalStateException.class, () -> child.awaitLine("ONE", Duration.ofMillis(300)));
            // The child prints ONE then TWO; waiting for ONE again is what a retrying test does.
            String line = child.awaitLine("", Duration.ofSeconds(15)); // the child's next line, whatever it is
            assertEquals("ONE", line, "the line ONE was consumed by the reader of the awaitLine that timed out");
            assertEquals(0, child.stop(Duration.ofSeconds(10)));
        } catch (IllegalStateException e) {
            throw new AssertionError("the child printed ONE but awaitLine never saw it: " + e.getMessage(), e);
        }
    }

    /** The contracts as a third party would run them, from another package, over wrapped implementations. */
    @Nested
    class ThirdPartyRegistry extends RegistryContractTest {
        @Override
        protected OfferRegistry create() {
            return new InProcessRegistry(clock::get);
        }
    }

    @Nested
    class ThirdPartyTransport extends TransportContractTest {
        HostDevice exporter;
        HostDevice importer;

        @Override
        protected Device exporterDevice() {
            exporter = new HostDevice(dir.resolve("tp"));
            return exporter;
        }

        @Override
        protected Device importerDevice() {
            importer = new HostDevice(dir.resolve("tp"));
            return importer;
        }

        @Override
        protected DeviceBytes bytes() {
            return DeviceBytes.HOST;
        }

        @Override
        protected Transport exporterTransport(Device exporter) {
            return new FaultyTransport(new DeviceIpcTransport(exporter));
        }

        @Override
        protected Transport importerTransport(Device importer) {
            return new FaultyTransport(new DeviceIpcTransport(importer));
        }

        @Override
        protected void closeDevices() {
            importer.close();
            exporter.close();
        }
    }
}
