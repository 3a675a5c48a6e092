package io.kvmarket;

import io.kvmarket.device.DeviceBuffer;
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
import java.nio.file.Path;
import java.util.List;
import java.util.function.UnaryOperator;

/** One engine for tests: a host device, a paged KV cache on it, and a marketplace over a given registry. */
final class KvFixture implements AutoCloseable {

    static final KvLayout LAYOUT = KvLayout.of(2, 2, 4, DType.FLOAT32, 16, LayoutOrder.LAYER_MAJOR);
    static final Namespace NS = Namespace.of("fixture-model", "rev1", "ids", LAYOUT);
    static final int CHUNK = 32;
    static final int BLOCKS = 64;

    final HostDevice device;
    final PagedKvCache cache;
    final KvMarketplace market;
    final DeviceIpcTransport transport;

    KvFixture(Path nodeDir, OfferRegistry registry, int poolChunks) {
        this(nodeDir, registry, poolChunks, NS, t -> t);
    }

    KvFixture(Path nodeDir, OfferRegistry registry, int poolChunks, Namespace ns, UnaryOperator<Transport> wrap) {
        device = new HostDevice(nodeDir);
        DeviceIpcTransport ipc = new DeviceIpcTransport(device);
        DeviceBuffer buf = device.allocate(PagedKvCache.requiredBytes(ns.layout(), BLOCKS));
        cache = new PagedKvCache(buf, ns.layout(), BLOCKS);
        long chunkBytes = ns.layout().blockBytes() * (CHUNK / ns.layout().tokensPerBlock());
        market = KvMarketplace.builder().namespace(ns).kvCache(cache).device(device).registry(registry)
                .chunkTokens(CHUNK).poolBytes(poolChunks * chunkBytes)
                .transports(List.of(wrap.apply(ipc))).build();
        transport = ipc;
    }

    ByteBuffer memory() {
        return ((HostBuffer) cache.buffer()).memory();
    }

    /** Writes KV for the request's blocks as a function of (salt, logical block index, region, byte). */
    void fill(int[] blocks, int count, int salt) {
        int regionBytes = (int) LAYOUT.regionBytes();
        for (int i = 0; i < count; i++) {
            for (int r = 0; r < LAYOUT.regionsPerBlock(); r++) {
                int off = (int) cache.regionOffset(blocks[i], r);
                for (int b = 0; b < regionBytes; b++) {
                    memory().put(off + b, (byte) (salt * 131 + i * 31 + r * 7 + b));
                }
            }
        }
    }

    /** The KV bytes of logical blocks [0, count) of a request, in logical order. */
    byte[] kvBytes(int[] blocks, int count) {
        int regionBytes = (int) LAYOUT.regionBytes();
        byte[] out = new byte[count * LAYOUT.regionsPerBlock() * regionBytes];
        int p = 0;
        for (int i = 0; i < count; i++) {
            for (int r = 0; r < LAYOUT.regionsPerBlock(); r++) {
                memory().get((int) cache.regionOffset(blocks[i], r), out, p, regionBytes);
                p += regionBytes;
            }
        }
        return out;
    }

    static int[] tokens(int n, int salt) {
        int[] t = new int[n];
        for (int i = 0; i < n; i++) {
            t[i] = salt * 1000 + i;
        }
        return t;
    }

    /** Block ids scattered the way a free list hands them out. */
    static int[] scattered(int n, int seed) {
        int[] all = new int[BLOCKS];
        for (int i = 0; i < BLOCKS; i++) {
            all[i] = i;
        }
        java.util.Random rnd = new java.util.Random(seed);
        for (int i = BLOCKS - 1; i > 0; i--) {
            int j = rnd.nextInt(i + 1);
            int tmp = all[i];
            all[i] = all[j];
            all[j] = tmp;
        }
        return java.util.Arrays.copyOf(all, n);
    }

    @Override
    public void close() {
        market.close();
        device.close();
    }
}
