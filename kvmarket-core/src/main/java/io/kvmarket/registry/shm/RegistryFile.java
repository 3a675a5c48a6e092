package io.kvmarket.registry.shm;

import io.kvmarket.node.NodeDirectory;
import io.kvmarket.registry.RegistryException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteOrder;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.locks.ReentrantLock;
import java.util.function.Supplier;

import static io.kvmarket.registry.shm.RegistryFileDescriptor.*;

/**
 * The registry file's lifecycle and locking: creates it atomically and private to the user, checks and maps it,
 * holds its header, and serializes writers across threads (a JVM-wide lock per file) and processes (an fcntl lock
 * the kernel drops when its holder dies).
 */
final class RegistryFile implements AutoCloseable {

    private static final Logger LOG = LoggerFactory.getLogger(RegistryFile.class);
    static final VarHandle LONGS = MethodHandles.byteBufferViewVarHandle(long[].class, ByteOrder.LITTLE_ENDIAN);
    private static final ConcurrentHashMap<Path, ReentrantLock> JVM_LOCKS = new ConcurrentHashMap<>();

    private final Path path;
    private final MappedByteBuffer map;
    /**
     * The file's size, read without the interruptible {@link FileChannel#size}: a thread interrupted there would close
     * the channel under every other thread.
     */
    private final RandomAccessFile sizer;
    private final long capacity;
    private final ReentrantLock jvmLock;
    /** Reopened when a thread interrupted inside {@link FileChannel#lock} closed it; guarded by jvmLock. */
    private FileChannel channel;
    private volatile boolean closed;
    /** Why this opening refuses every call from now on (its file was truncated under it); null while it serves. */
    private volatile String damage;

    private RegistryFile(Path path, FileChannel channel, RandomAccessFile sizer, MappedByteBuffer map, long capacity) {
        this.path = path;
        this.channel = channel;
        this.sizer = sizer;
        this.map = map;
        this.capacity = capacity;
        // One lock per file, however it is named: fcntl locks belong to the process, not to a channel.
        this.jvmLock = JVM_LOCKS.computeIfAbsent(path, p -> new ReentrantLock());
    }

    /**
     * Opens {@code name} in {@code dir}, creating it with {@code capacity} slots when no process has yet; an
     * existing file keeps its own capacity.
     *
     * @throws IllegalStateException when the directory or the file is not the user's own (see {@link NodeDirectory})
     * @throws RegistryException     when the file is truncated, of another version, or its header is damaged
     */
    static RegistryFile open(Path dir, String name, int capacity) {
        Path path = NodeDirectory.ensure(dir).resolve(name);
        try {
            createIfMissing(path, capacity);
            NodeDirectory.checkOwnFile(path);
            Path real = path.toRealPath();
            FileChannel channel = FileChannel.open(real, StandardOpenOption.READ, StandardOpenOption.WRITE);
            RandomAccessFile sizer = null;
            try {
                sizer = new RandomAccessFile(real.toFile(), "r");
                long size = channel.size();
                if (size < HEADER_BYTES) {
                    throw new RegistryException("registry file " + real + " is truncated (" + size + " bytes)");
                }
                MappedByteBuffer header = channel.map(FileChannel.MapMode.READ_ONLY, 0, HEADER_BYTES);
                header.order(ByteOrder.LITTLE_ENDIAN);
                long cap = header.getLong(CAPACITY_OFFSET);
                // Capacity is bounded before fileBytes(cap), which a damaged capacity could overflow past the check.
                if (header.getLong(MAGIC_OFFSET) != MAGIC || header.getInt(VERSION_OFFSET) != VERSION
                        || header.getInt(SLOT_BYTES_OFFSET) != SLOT_BYTES || cap <= 0 || cap > MAX_CAPACITY
                        || Long.bitCount(cap) != 1 || fileBytes(cap) != size) {
                    throw new RegistryException("registry file " + real + " has an incompatible or corrupted header"
                            + " (this version reads format " + VERSION + "; stop every process of the node and"
                            + " delete the file)");
                }
                MappedByteBuffer map = channel.map(FileChannel.MapMode.READ_WRITE, 0, size);
                map.order(ByteOrder.LITTLE_ENDIAN);
                return new RegistryFile(real, channel, sizer, map, cap);
            } catch (RuntimeException | IOException e) {
                channel.close();
                if (sizer != null) {
                    sizer.close();
                }
                throw e;
            }
        } catch (IOException e) {
            throw new RegistryException("cannot open node-local registry " + path, e);
        }
    }

    private static void createIfMissing(Path file, int capacity) throws IOException {
        if (Files.exists(file)) {
            return;
        }
        // Build the file aside and hard-link it into place: others see either no file or a complete header.
        Path tmp = file.resolveSibling(file.getFileName() + "." + ProcessHandle.current().pid() + "."
                + System.nanoTime() + ".tmp");
        try (FileChannel ch = FileChannel.open(tmp, Set.of(StandardOpenOption.CREATE_NEW, StandardOpenOption.READ,
                StandardOpenOption.WRITE), NodeDirectory.PRIVATE_FILE)) {
            MappedByteBuffer m = ch.map(FileChannel.MapMode.READ_WRITE, 0, fileBytes(capacity));
            m.order(ByteOrder.LITTLE_ENDIAN);
            m.putInt(VERSION_OFFSET, VERSION).putInt(SLOT_BYTES_OFFSET, SLOT_BYTES)
                    .putLong(CAPACITY_OFFSET, capacity).putLong(DIRTY_SLOT_OFFSET, -1L);
            m.putLong(MAGIC_OFFSET, MAGIC);
            m.force();
        }
        try {
            Files.createLink(file, tmp);
        } catch (FileAlreadyExistsException raced) {
            // another process created it first; use theirs
        } finally {
            Files.deleteIfExists(tmp);
        }
    }

    Path path() {
        return path;
    }

    MappedByteBuffer map() {
        return map;
    }

    long capacity() {
        return capacity;
    }

    /**
     * Fails when this opening was closed, or when another process truncated the file under its mapping, before an
     * access there faults: the JVM reports a fault in compiled code only at its next safepoint poll, which may lie
     * past any handler around the access. A truncation found, here or by a fault, is remembered: this opening
     * touches the mapping no more, so only calls already past this check when the file shrank can still fault.
     */
    void checkUsable() {
        if (closed) {
            throw new RegistryException("node-local registry " + path + " is closed");
        }
        String why = damage;
        if (why != null) {
            throw new RegistryException(why);
        }
        long size;
        try {
            size = sizer.length();
        } catch (IOException e) {
            throw new RegistryException("cannot read the size of registry file " + path + ": " + e, e);
        }
        if (size < map.capacity()) {
            throw damaged("was truncated to " + size + " bytes");
        }
    }

    /** Remembers that the file was cut under this opening; the failure to throw. */
    RegistryException damaged(String what) {
        damage = "registry file " + path + " " + what + " under this process (by another process of this user?); "
                + "this opening serves no more: stop every process of the node and delete the file";
        return new RegistryException(damage);
    }

    long live() {
        return (long) LONGS.getVolatile(map, LIVE_OFFSET);
    }

    long tombstones() {
        return map.getLong(TOMBSTONES_OFFSET);
    }

    /** Caller holds the lock. */
    void adjustLive(long delta) {
        LONGS.setRelease(map, LIVE_OFFSET, map.getLong(LIVE_OFFSET) + delta);
    }

    /** Caller holds the lock. */
    void adjustTombstones(long delta) {
        LONGS.setRelease(map, TOMBSTONES_OFFSET, map.getLong(TOMBSTONES_OFFSET) + delta);
    }

    /** Caller holds the lock. */
    void setCounters(long live, long tombstones) {
        map.putLong(LIVE_OFFSET, live).putLong(TOMBSTONES_OFFSET, tombstones);
    }

    boolean rebuilding() {
        return (long) LONGS.getVolatile(map, REBUILDING_OFFSET) != 0;
    }

    /** Set before a writer rewrites the whole table and cleared after, so that a rewrite cut short is redone. */
    void setRebuilding(boolean on) {
        LONGS.setVolatile(map, REBUILDING_OFFSET, on ? 1L : 0L);
    }

    long dirtySlot() {
        return (long) LONGS.getVolatile(map, DIRTY_SLOT_OFFSET);
    }

    /** Names the slot a writer changes, so the next writer repairs it if this one dies; -1 for none. */
    void setDirtySlot(long slot) {
        LONGS.setRelease(map, DIRTY_SLOT_OFFSET, slot);
    }

    /** Runs {@code body} as the only writer of the file, in this JVM and on the node. */
    <T> T withLock(Supplier<T> body) {
        // FileChannel.lock closes the channel when the calling thread is interrupted; hold the flag back meanwhile.
        boolean interrupted = Thread.interrupted();
        jvmLock.lock();
        try {
            if (closed) {
                throw new RegistryException("node-local registry " + path + " is closed");
            }
            if (!channel.isOpen()) {
                channel = FileChannel.open(path, StandardOpenOption.READ, StandardOpenOption.WRITE);
            }
            try (FileLock lock = channel.lock(0, HEADER_BYTES, false)) {
                return body.get();
            }
        } catch (IOException e) {
            throw new RegistryException("cannot lock registry file " + path + ": " + e, e);
        } finally {
            jvmLock.unlock();
            if (interrupted) {
                Thread.currentThread().interrupt();
            }
        }
    }

    /** Closes this opening's channel; under the JVM lock, since closing any channel drops the process's fcntl lock. */
    @Override
    public void close() {
        jvmLock.lock();
        try (sizer) {
            closed = true;
            channel.close();
        } catch (IOException e) {
            LOG.warn("closing registry file {}: {}", path, e.toString());
        } finally {
            jvmLock.unlock();
        }
    }
}
