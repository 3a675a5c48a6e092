package io.kvmarket.publicapi;

import io.kvmarket.KvMarketplace;
import io.kvmarket.device.Device;
import io.kvmarket.device.host.HostBuffer;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.kv.DType;
import io.kvmarket.kv.KvLayout;
import io.kvmarket.kv.LayoutOrder;
import io.kvmarket.key.Namespace;
import io.kvmarket.kv.PagedKvCache;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.transfer.DeviceIpcTransport;
import io.kvmarket.transfer.Transport;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Set;
import java.util.function.UnaryOperator;
import java.util.stream.Collectors;
import java.util.stream.Stream;

/** An engine built through the public API only, for the tests of this package. */
final class Rig {

    static final KvLayout LAYOUT = KvLayout.of(2, 2, 4, DType.FLOAT32, 16, LayoutOrder.LAYER_MAJOR);
    static final Namespace NS = Namespace.of("review-model", "rev1", "ids", LAYOUT);
    static final int CHUNK = 32;
    static final int BLOCKS = 64;
    static final long CHUNK_BYTES = LAYOUT.blockBytes() * (CHUNK / LAYOUT.tokensPerBlock());

    final PagedKvCache cache;
    final KvMarketplace market;

    Rig(Device device, OfferRegistry registry, int poolChunks, long pinLeaseMs, UnaryOperator<Transport> wrap) {
        cache = new PagedKvCache(device.allocate(PagedKvCache.requiredBytes(LAYOUT, BLOCKS)), LAYOUT, BLOCKS);
        KvMarketplace.Builder b = KvMarketplace.builder().namespace(NS).kvCache(cache).device(device)
                .registry(registry).chunkTokens(CHUNK).poolBytes(poolChunks * CHUNK_BYTES).pinLeaseMillis(pinLeaseMs);
        if (wrap != null) {
            b.transports(List.of(wrap.apply(new DeviceIpcTransport(device))));
        }
        market = b.build();
    }

    Rig(Device device, OfferRegistry registry, int poolChunks) {
        this(device, registry, poolChunks, 10_000, null);
    }

    ByteBuffer memory() {
        return ((HostBuffer) cache.buffer()).memory();
    }

    /** KV as a function of (salt, logical block, region, byte), like KvFixture. */
    void fill(int[] blocks, int count, int salt) {
        int regionBytes = (int) LAYOUT.regionBytes();
        for (int i = 0; i < count; i++) {
            for (int r = 0; r < LAYOUT.regionsPerBlock(); r++) {
                int off = (int) cache.regionOffset(blocks[i], r);
                for (int x = 0; x < regionBytes; x++) {
                    memory().put(off + x, (byte) (salt * 131 + i * 31 + r * 7 + x));
                }
            }
        }
    }

    /** First logical block in [0,count) whose bytes differ from what fill(salt) writes, or -1. */
    int firstWrongBlock(int[] blocks, int count, int salt) {
        int regionBytes = (int) LAYOUT.regionBytes();
        for (int i = 0; i < count; i++) {
            for (int r = 0; r < LAYOUT.regionsPerBlock(); r++) {
                int off = (int) cache.regionOffset(blocks[i], r);
                for (int x = 0; x < regionBytes; x++) {
                    if (memory().get(off + x) != (byte) (salt * 131 + i * 31 + r * 7 + x)) {
                        return i;
                    }
                }
            }
        }
        return -1;
    }

    static int[] tokens(int n, int salt) {
        int[] t = new int[n];
        for (int i = 0; i < n; i++) {
            t[i] = salt * 1000 + i;
        }
        return t;
    }

    static int[] range(int from, int n) {
        int[] b = new int[n];
        for (int i = 0; i < n; i++) {
            b[i] = from + i;
        }
        return b;
    }

    static Set<Path> memoryFiles(Path nodeDir) throws Exception {
        Path dir = nodeDir.resolve("host-device");
        if (!Files.isDirectory(dir)) {
            return Set.of();
        }
        try (Stream<Path> s = Files.list(dir)) {
            return s.filter(p -> p.toString().endsWith(".kvmem")).collect(Collectors.toSet());
        }
    }

    static HostDevice device(Path nodeDir) {
        return new HostDevice(nodeDir);
    }
}
