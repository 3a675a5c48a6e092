package io.kvmarket.device.host;

import io.kvmarket.device.CopyBatch;
import io.kvmarket.device.Device;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.device.DeviceException;
import io.kvmarket.node.MappedFaults;
import io.kvmarket.node.NodeDirectory;
import io.kvmarket.node.ProcessIdentity;
import org.jctools.queues.MpscUnboundedArrayQueue;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.zip.CRC32;

/**
 * The host as a device: memory in shared-memory files (RAM under the node directory), so its IPC handles cross
 * processes the way CUDA IPC handles do. Engines that compute on the CPU (the examples' Java transformer) keep
 * their KV cache on it, and {@link io.kvmarket.device.Devices#open()} falls back to it without a GPU. Each allocation is a file named after its owner ({@code pid-startTime-seq.kvmem}); a handle
 * names the file through those numbers only, never a path, so a forged handle cannot reach another file.
 * Copies run on one copy-engine thread fed by a multi-producer queue, like a CUDA stream. A handle of an
 * allocation of this device returns that allocation; any other handle, of another process or of another host
 * device in this one, is mapped read-only from its file.
 *
 * <p>Files of processes that died are deleted when the next host device on the node starts, and by
 * {@link #sweepDeadOwners()}.
 *
 * <pre>
 * Handle (44 bytes, little-endian):
 *   0                   4          6          8
 *   +-------------------+----------+----------+
 *   | magic 'KVMD'      | version  | reserved |
 *   +-------------------+----------+----------+
 *   | owner pid (8)                            |  8
 *   | owner start time (8)                     | 16
 *   | allocation sequence number (8)           | 24
 *   | size in bytes (8)                        | 32
 *   | CRC32 of bytes 0..39 (4)                 | 40
 *   +------------------------------------------+ 44
 * </pre>
 */
public final class HostDevice implements Device {

    public static final int HANDLE_BYTES = 44;
    /** Largest allocation: the host device maps each allocation as one {@link MappedByteBuffer}. */
    public static final long MAX_ALLOCATION = Integer.MAX_VALUE;

    private static final Logger LOG = LoggerFactory.getLogger(HostDevice.class);
    private static final int MAGIC = 0x444d564b; // "KVMD" little-endian
    private static final short VERSION = 1;
    private static final int PAGE_BYTES = 4096;
    private static final Pattern FILE_NAME = Pattern.compile("(\\d+)-(\\d+)-(\\d+)\\.kvmem");

    private final Path dir;
    private final ProcessIdentity self = ProcessIdentity.current();
    /** Process-wide, so several host devices in one JVM never name two allocations alike. */
    private static final AtomicLong NEXT_SEQ = new AtomicLong(1);
    private final Map<Long, HostBuffer> owned = new ConcurrentHashMap<>();
    private final MpscUnboundedArrayQueue<CopyTask> submissions = new MpscUnboundedArrayQueue<>(64);
    private final Thread copyEngine;
    private volatile boolean closed;

    /** A host device in the node's shared directory. */
    public HostDevice() {
        this(NodeDirectory.defaultPath());
    }

    public HostDevice(Path nodeDir) {
        this.dir = NodeDirectory.ensure(NodeDirectory.ensure(nodeDir).resolve("host-device"));
        sweepDeadOwners();
        copyEngine = new Thread(this::runCopyEngine, "kvmarket-host-copy-engine");
        copyEngine.setDaemon(true);
        copyEngine.start();
    }

    @Override
    public String name() {
        return "host:" + dir;
    }

    @Override
    public DeviceBuffer allocate(long bytes) {
        ensureOpen();
        if (bytes <= 0 || bytes > MAX_ALLOCATION) {
            throw new IllegalArgumentException("host device allocation of " + bytes + " bytes outside (0, " + MAX_ALLOCATION + "]");
        }
        long seq = NEXT_SEQ.getAndIncrement();
        Path file = dir.resolve(fileName(self.pid(), self.startTime(), seq));
        try (FileChannel ch = FileChannel.open(file, Set.of(StandardOpenOption.CREATE_NEW, StandardOpenOption.READ,
                StandardOpenOption.WRITE), NodeDirectory.PRIVATE_FILE)) {
            MappedByteBuffer map = ch.map(FileChannel.MapMode.READ_WRITE, 0, bytes); // grows the file to size
            // Resident from the start, as cudaMalloc'd memory is: the first copy into it pays no page faults.
            for (long page = 0; page < bytes; page += PAGE_BYTES) {
                map.put((int) page, (byte) 0);
            }
            HostBuffer buffer = new HostBuffer(self, seq, bytes, map.order(ByteOrder.LITTLE_ENDIAN), false, file);
            owned.put(seq, buffer);
            return buffer;
        } catch (IOException e) {
            deleteQuietly(file);
            throw new DeviceException("host device cannot allocate " + bytes + " bytes in " + dir, e);
        }
    }

    @Override
    public void free(DeviceBuffer buffer) {
        HostBuffer b = cast(buffer);
        if (b.isPeerMapping() || owned.remove(b.seq) == null) {
            throw new IllegalArgumentException("not an allocation of this device: " + b);
        }
        deleteQuietly(b.file);
    }

    @Override
    public byte[] exportHandle(DeviceBuffer buffer) {
        HostBuffer b = cast(buffer);
        if (b.isPeerMapping() || !owned.containsKey(b.seq)) {
            throw new IllegalArgumentException("only live allocations of this device can be exported: " + b);
        }
        ByteBuffer h = ByteBuffer.allocate(HANDLE_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        h.putInt(MAGIC).putShort(VERSION).putShort((short) 0)
                .putLong(self.pid()).putLong(self.startTime()).putLong(b.seq).putLong(b.size);
        h.putInt(crc(h.array()));
        return h.array();
    }

    @Override
    public DeviceBuffer openHandle(byte[] handle) {
        ensureOpen();
        if (handle == null || handle.length != HANDLE_BYTES) {
            throw new IllegalArgumentException("host device IPC handle must be " + HANDLE_BYTES + " bytes, was "
                    + (handle == null ? "null" : handle.length));
        }
        ByteBuffer h = ByteBuffer.wrap(handle).order(ByteOrder.LITTLE_ENDIAN);
        if (h.getInt(0) != MAGIC || h.getShort(4) != VERSION) {
            throw new IllegalArgumentException("not a host device IPC handle (bad magic or version)");
        }
        if (h.getInt(40) != crc(handle)) {
            throw new IllegalArgumentException("host device IPC handle checksum mismatch (corrupted handle)");
        }
        ProcessIdentity owner = new ProcessIdentity(h.getLong(8), h.getLong(16));
        long seq = h.getLong(24);
        long size = h.getLong(32);
        if (owner.pid() <= 0 || seq <= 0 || size <= 0 || size > MAX_ALLOCATION) {
            throw new IllegalArgumentException("host device IPC handle fields out of range: pid " + owner.pid()
                    + ", seq " + seq + ", size " + size);
        }
        HostBuffer own = owner.equals(self) ? owned.get(seq) : null;
        if (own != null) {
            if (own.size != size) {
                throw new IllegalArgumentException("host device IPC handle says " + size + " bytes, allocation has " + own.size);
            }
            return own;
        }
        Path file = dir.resolve(fileName(owner.pid(), owner.startTime(), seq));
        try {
            // Checked before it is opened: opening a FIFO planted under that name would block.
            NodeDirectory.checkOwnFile(file);
        } catch (NoSuchFileException e) {
            throw new DeviceException("peer allocation " + file.getFileName() + " is gone (freed, or its owner died)");
        } catch (IOException | IllegalStateException e) {
            throw new DeviceException("cannot trust peer allocation " + file.getFileName() + ": " + e.getMessage(), e);
        }
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ, LinkOption.NOFOLLOW_LINKS)) {
            if (ch.size() != size) {
                throw new DeviceException("peer allocation " + file.getFileName() + " has " + ch.size()
                        + " bytes, handle says " + size);
            }
            MappedByteBuffer map = ch.map(FileChannel.MapMode.READ_ONLY, 0, size);
            return new HostBuffer(owner, seq, size, map.order(ByteOrder.LITTLE_ENDIAN), true, file);
        } catch (NoSuchFileException e) {
            throw new DeviceException("peer allocation " + file.getFileName() + " is gone (freed, or its owner died)");
        } catch (IOException e) {
            throw new DeviceException("cannot map peer allocation " + file.getFileName(), e);
        }
    }

    @Override
    public void closeHandle(DeviceBuffer mapped) {
        // The JVM unmaps a MappedByteBuffer when it becomes unreachable; unmapping earlier could crash a copy
        // still reading it, so closing only drops this device's interest.
        cast(mapped);
    }

    @Override
    public CompletableFuture<Void> copy(DeviceBuffer src, DeviceBuffer dst, CopyBatch batch) {
        ensureOpen();
        HostBuffer s = cast(src);
        HostBuffer d = cast(dst);
        if (d.isPeerMapping()) {
            throw new IllegalArgumentException("destination is a read-only peer mapping: " + d);
        }
        batch.checkBounds(s.size, d.size);
        CopyTask task = new CopyTask(s, d, batch);
        submissions.offer(task);
        LockSupport.unpark(copyEngine);
        return task.done;
    }

    @Override
    public boolean isHostAddressable() {
        return true;
    }

    /** The mapped file itself; a peer mapping's view is read-only. */
    @Override
    public Optional<ByteBuffer> hostView(DeviceBuffer buffer) {
        return Optional.of(cast(buffer).memory.duplicate().clear());
    }

    /** Deletes memory files whose owner process is no longer alive. */
    public void sweepDeadOwners() {
        try (DirectoryStream<Path> files = Files.newDirectoryStream(dir, "*.kvmem")) {
            for (Path f : files) {
                Matcher m = FILE_NAME.matcher(f.getFileName().toString());
                if (m.matches()) {
                    ProcessIdentity owner = new ProcessIdentity(Long.parseLong(m.group(1)), Long.parseLong(m.group(2)));
                    if (!owner.isAlive()) {
                        LOG.info("deleting host device memory {} of dead process {}", f.getFileName(), owner.pid());
                        deleteQuietly(f);
                    }
                }
            }
        } catch (IOException e) {
            LOG.warn("cannot sweep host device directory {}: {}", dir, e.toString());
        }
    }

    /** Frees every allocation this device made and stops its copy engine. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        LockSupport.unpark(copyEngine);
        for (HostBuffer b : owned.values()) {
            deleteQuietly(b.file);
        }
        owned.clear();
    }

    private void runCopyEngine() {
        while (!closed || !submissions.isEmpty()) {
            CopyTask task = submissions.poll();
            if (task == null) {
                LockSupport.parkNanos(this, 1_000_000L);
                continue;
            }
            try {
                task.run();
                task.done.complete(null);
            } catch (RuntimeException e) {
                task.done.completeExceptionally(new DeviceException("host device copy failed: " + e, e));
            } catch (InternalError e) {
                if (!MappedFaults.isFault(e)) {
                    throw e;
                }
                // A memory file truncated under its mapping faulted. The JVM may report it only after the copy
                // returned (the copy's own size check fails that copy): here it must not end the engine.
                task.done.completeExceptionally(new DeviceException("host device copy faulted on memory another"
                        + " process truncated: " + e.getMessage(), e));
            }
        }
    }

    private void ensureOpen() {
        if (closed) {
            throw new IllegalStateException("host device is closed");
        }
    }

    private static HostBuffer cast(DeviceBuffer buffer) {
        if (!(buffer instanceof HostBuffer)) {
            throw new IllegalArgumentException("not a host device buffer: " + buffer);
        }
        return (HostBuffer) buffer;
    }

    private static String fileName(long pid, long startTime, long seq) {
        return pid + "-" + startTime + "-" + seq + ".kvmem";
    }

    private static int crc(byte[] handle) {
        CRC32 crc = new CRC32();
        crc.update(handle, 0, 40);
        return (int) crc.getValue();
    }

    private static void deleteQuietly(Path file) {
        try {
            Files.deleteIfExists(file);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot delete " + file, e);
        }
    }

    private static final class CopyTask {
        final HostBuffer src;
        final HostBuffer dst;
        final CopyBatch batch;
        final CompletableFuture<Void> done = new CompletableFuture<>();

        CopyTask(HostBuffer src, HostBuffer dst, CopyBatch batch) {
            this.src = src;
            this.dst = dst;
            this.batch = batch;
        }

        void run() {
            for (int i = 0; i < batch.segments(); i++) {
                dst.memory.put((int) batch.dstOffset(i), src.memory, (int) batch.srcOffset(i), (int) batch.length(i));
            }
            src.checkNotTruncated();
            dst.checkNotTruncated();
        }
    }
}
