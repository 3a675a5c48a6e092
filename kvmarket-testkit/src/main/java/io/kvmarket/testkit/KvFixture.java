package io.kvmarket.testkit;

import io.kvmarket.registry.Endpoint;
import io.kvmarket.KvMarketplace;
import io.kvmarket.device.Device;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.key.Namespace;
import io.kvmarket.kv.DType;
import io.kvmarket.kv.KvLayout;
import io.kvmarket.kv.LayoutOrder;
import io.kvmarket.kv.PagedKvCache;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.transfer.DeviceIpcTransport;
import io.kvmarket.transfer.Transport;

import java.nio.file.Path;
import java.util.List;
import java.util.function.Consumer;
import java.util.function.UnaryOperator;

/**
 * One engine for tests: a device, a paged KV cache of {@value #BLOCKS} blocks on it, and a marketplace over a given
 * registry whose one transport is a {@link DeviceIpcTransport}, optionally wrapped (to inject faults). Fills
 * requests' blocks with {@link KvPattern} and reads them back, so any process checks exact bytes alike.
 */
public final class KvFixture implements AutoCloseable {

    public static final KvLayout LAYOUT = KvLayout.of(2, 2, 4, DType.FLOAT32, 16, LayoutOrder.LAYER_MAJOR);
    public static final Namespace NS = Namespace.of("fixture-model", "rev1", "ids", LAYOUT);
    public static final int CHUNK = 32;
    public static final int BLOCKS = 64;

    public final Device device;
    public final PagedKvCache cache;
    public final KvMarketplace market;
    public final DeviceIpcTransport transport;
    private final DeviceBytes bytes;
    private final boolean ownsDevice;

    /** On its own host device in {@code nodeDir}, with a pool of {@code poolChunks} chunks. */
    public KvFixture(Path nodeDir, OfferRegistry registry, int poolChunks) {
        this(nodeDir, registry, poolChunks, NS, t -> t);
    }

    /** As above, in namespace {@code ns}, with the transport wrapped by {@code wrap}. */
    public KvFixture(Path nodeDir, OfferRegistry registry, int poolChunks, Namespace ns, UnaryOperator<Transport> wrap) {
        this(new HostDevice(nodeDir), DeviceBytes.HOST, true, registry, ns, wrap,
                b -> b.poolBytes(poolChunks * chunkBytes(ns.layout(), CHUNK)));
    }

    /**
     * On {@code device} (closed with the fixture when {@code ownsDevice}); {@code configure} sees a builder that
     * already has the namespace, cache, device, registry, transport and chunk size {@value #CHUNK}.
     */
    public KvFixture(Device device, DeviceBytes bytes, boolean ownsDevice, OfferRegistry registry, Namespace ns,
                     UnaryOperator<Transport> wrap, Consumer<KvMarketplace.Builder> configure) {
        this.device = device;
        this.bytes = bytes;
        this.ownsDevice = ownsDevice;
        DeviceBuffer buffer = device.allocate(PagedKvCache.requiredBytes(ns.layout(), BLOCKS));
        this.cache = new PagedKvCache(buffer, ns.layout(), BLOCKS);
        this.transport = new DeviceIpcTransport(device);
        try {
            KvMarketplace.Builder builder = KvMarketplace.builder().namespace(ns).kvCache(cache).device(device)
                    .registry(registry).chunkTokens(CHUNK).transports(List.of(wrap.apply(transport)));
            configure.accept(builder);
            this.market = builder.build();
        } catch (RuntimeException | Error e) {
            transport.close();
            device.free(buffer);
            if (ownsDevice) {
                device.close();
            }
            throw e;
        }
    }

    /** The device IPC endpoint of this engine's export pool, as its offers carry it. */
    public Endpoint poolEndpoint() {
        return new Endpoint(Endpoint.DEVICE_IPC, device.exportHandle(market.pool().buffer()));
    }

    /** Bytes of one chunk of {@code chunkTokens} tokens in {@code layout}. */
    public static long chunkBytes(KvLayout layout, int chunkTokens) {
        return layout.blockBytes() * (chunkTokens / layout.tokensPerBlock());
    }

    public long chunkBytes() {
        return chunkBytes(cache.layout(), market.chunkTokens());
    }

    /** Writes {@link KvPattern} KV of {@code salt} into the request's logical blocks {@code [0, count)}. */
    public void fill(int[] blocks, int count, int salt) {
        KvLayout layout = cache.layout();
        for (int i = 0; i < count; i++) {
            for (int r = 0; r < layout.regionsPerBlock(); r++) {
                bytes.write(cache.buffer(), cache.regionOffset(blocks[i], r),
                        KvPattern.region(salt, i, r, (int) layout.regionBytes()));
            }
        }
        bytes.flush();
    }

    /** The KV bytes of logical blocks {@code [0, count)} of a request, in logical order. */
    public byte[] kvBytes(int[] blocks, int count) {
        KvLayout layout = cache.layout();
        int regionBytes = (int) layout.regionBytes();
        byte[] out = new byte[count * layout.regionsPerBlock() * regionBytes];
        int p = 0;
        for (int i = 0; i < count; i++) {
            for (int r = 0; r < layout.regionsPerBlock(); r++) {
                System.arraycopy(bytes.read(cache.buffer(), cache.regionOffset(blocks[i], r), regionBytes), 0, out, p,
                        regionBytes);
                p += regionBytes;
            }
        }
        return out;
    }

    /** The first logical block in {@code [0, count)} that does not hold {@code salt}'s pattern, or -1. */
    public int firstWrongBlock(int[] blocks, int count, int salt) {
        KvLayout layout = cache.layout();
        int regionBytes = (int) layout.regionBytes();
        for (int i = 0; i < count; i++) {
            for (int r = 0; r < layout.regionsPerBlock(); r++) {
                if (!java.util.Arrays.equals(KvPattern.region(salt, i, r, regionBytes),
                        bytes.read(cache.buffer(), cache.regionOffset(blocks[i], r), regionBytes))) {
                    return i;
                }
            }
        }
        return -1;
    }

    public static int[] tokens(int n, int salt) {
        return KvPattern.tokens(n, salt);
    }

    /** {@code n} of this fixture's {@value #BLOCKS} block ids, shuffled by {@code seed}. */
    public static int[] scattered(int n, int seed) {
        return KvPattern.scattered(n, BLOCKS, seed);
    }

    @Override
    public void close() {
        market.close();
        transport.close();
        if (ownsDevice) {
            device.close();
        }
    }
}
