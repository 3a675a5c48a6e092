package io.kvmarket.nvlink;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.device.Device;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.device.DeviceException;
import io.kvmarket.device.DeviceUnreachableException;
import io.kvmarket.nativecopy.CopyMethod;
import io.kvmarket.nativecopy.NativeCopy;
import io.kvmarket.nativecopy.NativeCopyException;
import io.kvmarket.node.ProcessIdentity;
import org.bytedeco.cuda.cudart.CUstream_st;
import org.bytedeco.cuda.cudart.cudaIpcMemHandle_t;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.PointerPointer;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.Map;
import java.util.Optional;
import java.util.OptionalLong;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Supplier;

import static org.bytedeco.cuda.global.cudart.*;

/**
 * One CUDA GPU behind the core's device SPI. Memory is cudaMalloc'd; an exported handle wraps
 * cudaIpcGetMemHandle, and a peer maps it with cudaIpcOpenMemHandle (the marketplace's transport caches the
 * mapping and closes it when the peer dies or the mapping goes unused). Every {@link #copy} is ONE native call
 * into kvmarket-native's batched copy on this device's stream, whatever the number of segments, followed by a
 * stream synchronize on the device's copy thread; nothing stages through host memory. Memory of another GPU of
 * the node (an exporter on another GPU, or this process's allocation on another device) is read directly over
 * NVLink or PCIe peer-to-peer when {@link PeerAccess} finds a path, and is a miss otherwise.
 *
 * <p>Needs {@link CudaRuntime#isAvailable()}. One device ordinal per instance; each call sets it as the calling
 * thread's current device and restores the previous one.
 */
public final class CudaDevice implements Device {

    /** Allocations of every CudaDevice in this process: CUDA cannot open an IPC handle of its own process. */
    private static final Map<Long, CudaBuffer> PROCESS_ALLOCATIONS = new ConcurrentHashMap<>();
    private static final AtomicLong NEXT_ID = new AtomicLong(1);

    private final int ordinal;
    private final CopyMethod method;
    private final ProcessIdentity self = ProcessIdentity.current();
    private final Map<Long, CudaBuffer> owned = new ConcurrentHashMap<>();
    /** Pinned host memory this device allocated for staging, by allocation id. */
    private final Map<Long, CudaBuffer> staging = new ConcurrentHashMap<>();
    private final CUstream_st stream = new CUstream_st();
    private final ExecutorService copyThread;
    private final String pciBusId;
    private final PeerAccess peers;
    private final String name;
    private volatile boolean closed;

    public CudaDevice(int ordinal) {
        this(ordinal, CopyMethod.GATHER_KERNEL);
    }

    /**
     * @param method how kvmarket-native issues a batch: cudaMemcpyBatchAsync or the gather/scatter kernel
     */
    public CudaDevice(int ordinal, CopyMethod method) {
        CudaRuntime.ensureAvailability();
        if (ordinal < 0 || ordinal >= CudaRuntime.deviceCountIfAvailable()) {
            throw new IllegalArgumentException("CUDA device " + ordinal + " outside [0, "
                    + CudaRuntime.deviceCountIfAvailable() + ")");
        }
        this.ordinal = ordinal;
        this.method = method;
        this.pciBusId = pciBusIdOf(ordinal);
        this.peers = new PeerAccess(ordinal, new CudaTopology());
        onDevice(() -> check(cudaStreamCreateWithFlags(stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags"));
        this.copyThread = Executors.newSingleThreadExecutor(r -> {
            Thread t = new Thread(r, "kvmarket-cuda" + ordinal + "-copy");
            t.setDaemon(true);
            return t;
        });
        this.name = "cuda:" + ordinal + " " + pciBusId + " (" + method + ")";
    }

    @Override
    public String name() {
        return name;
    }

    public CopyMethod copyMethod() {
        return method;
    }

    @Override
    public DeviceBuffer allocate(long bytes) {
        ensureOpen();
        if (bytes <= 0) {
            throw new IllegalArgumentException("allocation of " + bytes + " bytes");
        }
        Pointer p = onDevice(() -> {
            PointerPointer<Pointer> out = new PointerPointer<>(1);
            int err = cudaMalloc(out, bytes);
            if (err != cudaSuccess) {
                throw new DeviceException("cudaMalloc of " + bytes + " bytes failed: " + CudaRuntime.errorString(err));
            }
            // Zeroed on this device's stream and waited for, so no later copy on that stream can be overtaken.
            check(cudaMemsetAsync(out.get(0), 0, bytes, stream), "cudaMemsetAsync");
            check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
            return out.get(0);
        });
        long id = NEXT_ID.getAndIncrement();
        CudaBuffer buffer = new CudaBuffer(p, bytes, self, id, false);
        owned.put(id, buffer);
        PROCESS_ALLOCATIONS.put(id, buffer);
        return buffer;
    }

    /**
     * Pinned, mapped host memory (cudaHostAlloc, portable): the batched copy reaches it like device memory, through
     * unified addressing, and the JVM through {@link #hostView}. Not verified on a GPU yet.
     */
    @Override
    public DeviceBuffer allocateStaging(long bytes) {
        ensureOpen();
        if (bytes <= 0 || bytes > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("staging allocation of " + bytes + " bytes outside (0, 2 GiB)");
        }
        Pointer p = onDevice(() -> {
            PointerPointer<Pointer> out = new PointerPointer<>(1);
            int err = cudaHostAlloc(out, bytes, cudaHostAllocPortable | cudaHostAllocMapped);
            if (err != cudaSuccess) {
                throw new DeviceException("cudaHostAlloc of " + bytes + " bytes failed: " + CudaRuntime.errorString(err));
            }
            return out.get(0);
        });
        long id = NEXT_ID.getAndIncrement();
        CudaBuffer buffer = new CudaBuffer(p, bytes, self, id, false);
        staging.put(id, buffer);
        return buffer;
    }

    /** Staging memory only: device memory is out of the JVM's reach. */
    @Override
    public Optional<ByteBuffer> hostView(DeviceBuffer buffer) {
        CudaBuffer b = cast(buffer);
        return staging.get(b.allocationId) == b
                ? Optional.of(new BytePointer(b.pointer).capacity(b.size).asByteBuffer()) : Optional.empty();
    }

    /** Device memory's pointer, for a NIC registering it (GPUDirect RDMA); staging memory has a host view instead. */
    @Override
    public OptionalLong deviceAddress(DeviceBuffer buffer) {
        CudaBuffer b = cast(buffer);
        return staging.get(b.allocationId) == b ? OptionalLong.empty() : OptionalLong.of(b.address());
    }

    @Override
    public void free(DeviceBuffer buffer) {
        CudaBuffer b = cast(buffer);
        if (!b.isPeerMapping() && staging.remove(b.allocationId, b)) {
            onDevice(() -> check(cudaFreeHost(b.pointer), "cudaFreeHost"));
            return;
        }
        if (b.isPeerMapping() || owned.remove(b.allocationId) == null) {
            throw new IllegalArgumentException("not an allocation of this device: " + b);
        }
        PROCESS_ALLOCATIONS.remove(b.allocationId);
        onDevice(() -> check(cudaFree(b.pointer), "cudaFree"));
    }

    @Override
    public byte[] exportHandle(DeviceBuffer buffer) {
        CudaBuffer b = cast(buffer);
        if (b.isPeerMapping() || !owned.containsKey(b.allocationId)) {
            throw new IllegalArgumentException("only live allocations of this device can be exported: " + b);
        }
        cudaIpcMemHandle_t h = new cudaIpcMemHandle_t();
        onDevice(() -> check(cudaIpcGetMemHandle(h, b.pointer), "cudaIpcGetMemHandle"));
        byte[] raw = new byte[CudaIpcHandle.CUDA_HANDLE_BYTES];
        h.reserved().get(raw);
        return new CudaIpcHandle(self, b.allocationId, b.size, pciBusId, raw).encode();
    }

    @Override
    public DeviceBuffer openHandle(byte[] handle) {
        ensureOpen();
        CudaIpcHandle h = CudaIpcHandle.decode(handle);
        boolean ownProcess = h.owner().equals(self);
        peers.ensureReadable(h.pciBusId(), ownProcess);
        if (ownProcess) {
            CudaBuffer own = PROCESS_ALLOCATIONS.get(h.allocationId());
            if (own == null) {
                throw new DeviceException("allocation " + h.allocationId() + " of this process is no longer live");
            }
            if (own.size != h.size()) {
                throw new IllegalArgumentException("handle says " + h.size() + " bytes, allocation has " + own.size);
            }
            return own;
        }
        cudaIpcMemHandle_t raw = new cudaIpcMemHandle_t();
        raw.reserved().put(h.cudaHandle());
        PointerPointer<Pointer> out = new PointerPointer<>(1);
        int err = onDevice(() -> cudaIpcOpenMemHandle(out, raw, cudaIpcMemLazyEnablePeerAccess));
        if (err != cudaSuccess) {
            throw new DeviceException("cudaIpcOpenMemHandle of pid " + h.owner().pid() + "'s allocation "
                    + h.allocationId() + " failed: " + CudaRuntime.errorString(err));
        }
        return new CudaBuffer(out.get(0), h.size(), h.owner(), h.allocationId(), true);
    }

    @Override
    public void closeHandle(DeviceBuffer mapped) {
        CudaBuffer b = cast(mapped);
        if (b.isPeerMapping()) {
            onDevice(() -> check(cudaIpcCloseMemHandle(b.pointer), "cudaIpcCloseMemHandle"));
        }
    }

    @Override
    public CompletableFuture<Void> copy(DeviceBuffer src, DeviceBuffer dst, CopyBatch batch) {
        ensureOpen();
        CudaBuffer s = cast(src);
        CudaBuffer d = cast(dst);
        batch.checkBounds(s.size, d.size);
        return CompletableFuture.runAsync(() -> {
            check(cudaSetDevice(ordinal), "cudaSetDevice");
            try {
                NativeCopy.copyBatch(method, s.address(), d.address(), batch.srcOffsetArray(), batch.dstOffsetArray(),
                        batch.lengthArray(), batch.segments(), stream.address());
            } catch (NativeCopyException e) {
                throw new DeviceException("batched copy of " + batch + " failed", e);
            }
            check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
        }, copyThread);
    }

    /** Frees this device's allocations and its stream. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        copyThread.shutdown();
        try {
            // Copies already submitted still read and write these allocations.
            copyThread.awaitTermination(30, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        onDevice(() -> {
            for (CudaBuffer b : owned.values()) {
                PROCESS_ALLOCATIONS.remove(b.allocationId);
                cudaFree(b.pointer);
            }
            owned.clear();
            for (CudaBuffer b : staging.values()) {
                cudaFreeHost(b.pointer);
            }
            staging.clear();
            NativeCopy.releaseStream(stream.address());
            return cudaStreamDestroy(stream);
        });
    }

    private void ensureOpen() {
        if (closed) {
            throw new IllegalStateException("CUDA device " + ordinal + " is closed");
        }
    }

    private static String pciBusIdOf(int ordinal) {
        byte[] id = new byte[64];
        check(cudaDeviceGetPCIBusId(id, id.length, ordinal), "cudaDeviceGetPCIBusId");
        int length = 0;
        while (length < id.length && id[length] != 0) {
            length++;
        }
        return new String(id, 0, length, StandardCharsets.US_ASCII);
    }

    /** The node's GPUs as this process's CUDA runtime sees them. */
    private final class CudaTopology implements PeerAccess.Topology {

        @Override
        public int ordinalOf(String pciBusId) {
            int[] peer = new int[1];
            if (cudaDeviceGetByPCIBusId(peer, pciBusId) != cudaSuccess) {
                cudaGetLastError(); // not an error of any later call on this thread
                return -1;
            }
            return peer[0];
        }

        @Override
        public boolean canAccessPeer(int peerOrdinal) {
            int[] can = new int[1];
            int err = cudaDeviceCanAccessPeer(can, ordinal, peerOrdinal);
            if (err != cudaSuccess) {
                cudaGetLastError();
                throw new DeviceUnreachableException("cudaDeviceCanAccessPeer(" + ordinal + ", " + peerOrdinal
                        + ") failed: " + CudaRuntime.errorString(err));
            }
            return can[0] != 0;
        }

        @Override
        public void enablePeerAccess(int peerOrdinal) {
            onDevice(() -> {
                int err = cudaDeviceEnablePeerAccess(peerOrdinal, 0);
                if (err == cudaErrorPeerAccessAlreadyEnabled) {
                    return cudaGetLastError(); // another device instance enabled it first: fine, and not sticky
                }
                return check(err, "cudaDeviceEnablePeerAccess");
            });
        }
    }

    private static CudaBuffer cast(DeviceBuffer buffer) {
        if (!(buffer instanceof CudaBuffer)) {
            throw new IllegalArgumentException("not a CUDA device buffer: " + buffer);
        }
        return (CudaBuffer) buffer;
    }

    /** Runs CUDA calls on this device and restores the calling thread's current device afterwards. */
    private <T> T onDevice(Supplier<T> calls) {
        int[] previous = new int[1];
        check(cudaGetDevice(previous), "cudaGetDevice");
        if (previous[0] != ordinal) {
            check(cudaSetDevice(ordinal), "cudaSetDevice");
        }
        try {
            return calls.get();
        } finally {
            if (previous[0] != ordinal) {
                cudaSetDevice(previous[0]);
            }
        }
    }

    private static int check(int err, String call) {
        if (err != cudaSuccess) {
            throw new DeviceException(call + " failed: " + CudaRuntime.errorString(err));
        }
        return err;
    }
}
