package io.kvmarket.transfer;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.device.Device;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.device.DeviceException;
import io.kvmarket.device.DeviceUnreachableException;
import io.kvmarket.node.NodeId;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.nio.ByteBuffer;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.function.LongSupplier;

/**
 * Same node: maps the exporter's pool buffer through the device's IPC handle (CUDA IPC, or the host device's
 * shared-memory files) and copies device to device. Mappings are cached per peer allocation, since opening one
 * costs far more than a copy (0.2 ms measured for CUDA IPC). A mapping is dropped when its peer dies or when no
 * import has used it for the idle limit: a live exporter that frees its pool withdraws every offer naming it, and
 * an importer that kept the mapping would keep that GPU memory allocated. The copy never stages through host
 * memory. A handle of this process's own pool maps to the pool itself.
 */
public final class DeviceIpcTransport implements Transport {

    /** One offer lease: by then every offer naming a freed pool has been withdrawn or has expired. */
    public static final long DEFAULT_IDLE_UNMAP_MILLIS = 60_000;

    private static final Logger LOG = LoggerFactory.getLogger(DeviceIpcTransport.class);

    private final Device device;
    private final long nodeId;
    private final long idleLimitNanos;
    private final LongSupplier nanoClock;
    private final Map<ByteBuffer, Mapping> mappings = new ConcurrentHashMap<>();
    private boolean closed;

    /** Reaches this node's offers; unmaps a peer buffer unused for {@link #DEFAULT_IDLE_UNMAP_MILLIS}. */
    public DeviceIpcTransport(Device device) {
        this(device, NodeId.local(), DEFAULT_IDLE_UNMAP_MILLIS);
    }

    /**
     * @param nodeId          the node whose offers this transport reaches
     * @param idleUnmapMillis how long a mapping may go unused before {@link #evictStale} unmaps it
     */
    public DeviceIpcTransport(Device device, long nodeId, long idleUnmapMillis) {
        this(device, nodeId, idleUnmapMillis, System::nanoTime);
    }

    DeviceIpcTransport(Device device, long nodeId, long idleUnmapMillis, LongSupplier nanoClock) {
        if (idleUnmapMillis <= 0) {
            throw new IllegalArgumentException("idleUnmapMillis must be positive, was " + idleUnmapMillis);
        }
        this.device = device;
        this.nodeId = nodeId;
        this.idleLimitNanos = TimeUnit.MILLISECONDS.toNanos(idleUnmapMillis);
        this.nanoClock = nanoClock;
    }

    @Override
    public String name() {
        return "device-ipc";
    }

    @Override
    public int endpointKind() {
        return Endpoint.DEVICE_IPC;
    }

    /**
     * The device's IPC handle of the pool: other processes of this node map it and copy from it themselves, which
     * registry pins and the check after the copy keep safe.
     */
    @Override
    public Optional<Endpoint> advertise(ServedPool pool) {
        return Optional.of(new Endpoint(Endpoint.DEVICE_IPC, device.exportHandle(pool.buffer())));
    }

    /**
     * Offers of this node with an IPC handle. The figures rank this route against others of its locality, they
     * are not measurements: a device-to-device copy after a one-time mapping beats any other way on one node.
     */
    @Override
    public Optional<Route> route(Offer offer) {
        if (offer.nodeId() != nodeId || offer.endpoint(Endpoint.DEVICE_IPC).isEmpty()) {
            return Optional.empty();
        }
        Locality locality = offer.owner().equals(ProcessIdentity.current()) ? Locality.SAME_PROCESS : Locality.SAME_NODE;
        return Optional.of(new Route(locality, 10_000, 100.0));
    }

    @Override
    public CompletableFuture<Void> fetch(List<Offer> chunks, DeviceBuffer dst, CopyBatch batch) {
        Offer source = chunks.get(0);
        Optional<Endpoint> endpoint = source.endpoint(Endpoint.DEVICE_IPC);
        if (endpoint.isEmpty()) {
            return CompletableFuture.failedFuture(new TransferException(TransferFailure.UNREACHABLE,
                    source + " has no device IPC endpoint"));
        }
        Mapping m;
        try {
            m = acquire(source, endpoint.get().bytes());
        } catch (IllegalArgumentException e) {
            return CompletableFuture.failedFuture(new TransferException(TransferFailure.MALFORMED,
                    "malformed handle in " + source + ": " + e.getMessage(), e));
        } catch (DeviceUnreachableException e) {
            return CompletableFuture.failedFuture(new TransferException(TransferFailure.UNREACHABLE,
                    "cannot reach " + source + ": " + e.getMessage(), e));
        } catch (DeviceException e) {
            return CompletableFuture.failedFuture(new TransferException(TransferFailure.SOURCE_GONE,
                    "cannot map " + source + ": " + e.getMessage(), e));
        }
        CompletableFuture<Void> copy;
        try {
            copy = device.copy(m.buffer, dst, batch);
        } catch (RuntimeException e) {
            release(m);
            if (e instanceof IllegalArgumentException) {
                return CompletableFuture.failedFuture(new TransferException(TransferFailure.MALFORMED,
                        "offer span does not fit its source buffer: " + e.getMessage(), e));
            }
            if (e instanceof DeviceException) {
                return CompletableFuture.failedFuture(new TransferException(TransferFailure.FAILED,
                        "copy from " + source + " could not start: " + e.getMessage(), e));
            }
            throw e;
        }
        return copy.handle((ok, error) -> {
            release(m);
            if (error != null) {
                throw new TransferException(TransferFailure.FAILED, "copy from " + source + " failed", error);
            }
            return null;
        });
    }

    /** The cached mapping of the buffer {@code handle} names, opened on first use, held until {@link #release}. */
    private Mapping acquire(Offer source, byte[] handle) {
        ByteBuffer key = ByteBuffer.wrap(handle);
        while (true) {
            Mapping m = mappings.get(key);
            if (m == null) {
                m = open(key, handle, source);
            }
            if (m.acquire()) {
                return m;
            }
            mappings.remove(key, m); // retired meanwhile: map afresh
        }
    }

    /** Opens one mapping per key; serialized with {@link #close} so none is opened behind it and leaked. */
    private synchronized Mapping open(ByteBuffer key, byte[] handle, Offer source) {
        if (closed) {
            throw new IllegalStateException("transport is closed");
        }
        Mapping m = mappings.get(key);
        if (m == null) {
            long start = nanoClock.getAsLong();
            m = new Mapping(device.openHandle(handle), source.owner(), start);
            mappings.put(key, m);
            LOG.debug("mapped peer buffer of pid {} in {} us", source.owner().pid(),
                    (nanoClock.getAsLong() - start) / 1000);
        }
        return m;
    }

    private void release(Mapping m) {
        if (m.release(nanoClock.getAsLong())) {
            device.closeHandle(m.buffer);
        }
    }

    /** Number of peer allocations currently mapped. */
    public int cachedMappings() {
        return mappings.size();
    }

    @Override
    public void evictStale() {
        long now = nanoClock.getAsLong();
        for (Map.Entry<ByteBuffer, Mapping> e : mappings.entrySet()) {
            Mapping m = e.getValue();
            boolean dead = !m.owner.isAlive();
            boolean unmapNow = dead ? m.retire() : m.retireIfIdle(now, idleLimitNanos);
            if (dead || unmapNow) {
                mappings.remove(e.getKey(), m); // only this mapping: a fresh one may have replaced it
            }
            if (unmapNow) {
                device.closeHandle(m.buffer);
            }
            if (dead) {
                LOG.info("dropped mapping of dead peer pid {}", m.owner.pid());
            } else if (unmapNow) {
                LOG.debug("unmapped a buffer of pid {} unused for {} ms", m.owner.pid(),
                        TimeUnit.NANOSECONDS.toMillis(idleLimitNanos));
            }
        }
    }

    /** Drops every mapping; one still in use by a copy is closed when that copy completes. */
    @Override
    public synchronized void close() {
        closed = true;
        for (Map.Entry<ByteBuffer, Mapping> e : mappings.entrySet()) {
            mappings.remove(e.getKey(), e.getValue());
            if (e.getValue().retire()) {
                device.closeHandle(e.getValue().buffer);
            }
        }
    }

    /**
     * A mapped peer buffer and the copies using it: it is unmapped only once retired (owner dead, idle, transport
     * closed) and no copy reads it any more, since unmapping under a running CUDA copy faults the context.
     */
    private static final class Mapping {
        final DeviceBuffer buffer;
        final ProcessIdentity owner;
        private int users;
        private boolean retired;
        private long lastUsedNanos;

        Mapping(DeviceBuffer buffer, ProcessIdentity owner, long openedNanos) {
            this.buffer = buffer;
            this.owner = owner;
            this.lastUsedNanos = openedNanos;
        }

        synchronized boolean acquire() {
            if (retired) {
                return false;
            }
            users++;
            return true;
        }

        /** @return true when the caller must unmap: the last user of a retired mapping */
        synchronized boolean release(long nowNanos) {
            users--;
            lastUsedNanos = nowNanos;
            return retired && users == 0;
        }

        /** @return true when the caller must unmap now: nobody has used it for {@code limitNanos} */
        synchronized boolean retireIfIdle(long nowNanos, long limitNanos) {
            if (retired || users > 0 || nowNanos - lastUsedNanos < limitNanos) {
                return false;
            }
            retired = true;
            return true;
        }

        /** @return true when the caller must unmap now: nobody uses it */
        synchronized boolean retire() {
            boolean first = !retired;
            retired = true;
            return first && users == 0;
        }
    }
}
