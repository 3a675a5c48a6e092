package io.kvmarket.publicapi;

import io.kvmarket.device.Device;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.testkit.DeviceBytes;
import io.kvmarket.testkit.KvFixture;
import io.kvmarket.transfer.Transport;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Set;
import java.util.function.UnaryOperator;
import java.util.stream.Collectors;
import java.util.stream.Stream;

/** Engines for this package's tests, several on one device as an engine with replicas would run them. */
final class Rig {

    private Rig() {
    }

    static KvFixture engine(Device device, OfferRegistry registry, int poolChunks) {
        return engine(device, registry, poolChunks, 10_000, t -> t);
    }

    static KvFixture engine(Device device, OfferRegistry registry, int poolChunks, long pinLeaseMs,
                            UnaryOperator<Transport> wrap) {
        return new KvFixture(device, DeviceBytes.HOST, false, registry, KvFixture.NS, wrap,
                b -> b.poolBytes(poolChunks * KvFixture.chunkBytes(KvFixture.LAYOUT, KvFixture.CHUNK))
                        .pinLeaseMillis(pinLeaseMs));
    }

    /** The host device's memory files in {@code nodeDir}: one per live allocation. */
    static Set<Path> memoryFiles(Path nodeDir) throws Exception {
        Path dir = nodeDir.resolve("host-device");
        if (!Files.isDirectory(dir)) {
            return Set.of();
        }
        try (Stream<Path> s = Files.list(dir)) {
            return s.filter(p -> p.toString().endsWith(".kvmem")).collect(Collectors.toSet());
        }
    }
}
