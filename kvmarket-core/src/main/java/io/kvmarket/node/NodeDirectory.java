package io.kvmarket.node;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.attribute.FileAttribute;
import java.nio.file.attribute.PosixFileAttributes;
import java.nio.file.attribute.PosixFilePermission;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.Set;

/**
 * The directory every process of one user on this node shares: the node-local registry file and the host
 * device's memory files live here. RAM-backed /dev/shm where it exists, so nothing touches a disk.
 * {@code -Dkvmarket.dir=...} or {@code KVMARKET_DIR} overrides it (tests give each run its own).
 *
 * <p>KV bytes reveal the prompts they were computed from, and the registry tells importers which memory to read:
 * the directory is the user's alone. It is created {@code rwx------} and its files {@code rw-------}, and an
 * existing one is used only when it is a real directory (not a symbolic link), owned by this process's user, and
 * closed to group and others, as ssh treats {@code ~/.ssh}. Otherwise another user who created the predictable
 * name first in world-writable /dev/shm would read every prompt's KV and could feed imports KV of their choosing.
 */
public final class NodeDirectory {

    /** Permissions of every file the library creates in the node directory. */
    public static final FileAttribute<Set<PosixFilePermission>> PRIVATE_FILE =
            PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rw-------"));
    private static final Set<PosixFilePermission> PRIVATE_DIR = PosixFilePermissions.fromString("rwx------");

    private NodeDirectory() {
    }

    public static Path defaultPath() {
        String configured = System.getProperty("kvmarket.dir", System.getenv("KVMARKET_DIR"));
        if (configured != null && !configured.isBlank()) {
            return Path.of(configured);
        }
        Path shm = Path.of("/dev/shm");
        Path base = Files.isDirectory(shm) && Files.isWritable(shm) ? shm : Path.of(System.getProperty("java.io.tmpdir"));
        return base.resolve("kvmarket-" + System.getProperty("user.name", "user"));
    }

    /**
     * Creates {@code dir} (and missing parents) private to this user, or checks that an existing one is.
     *
     * @throws IllegalStateException when it exists but is a symbolic link, belongs to another user, or is open to
     *                               group or others; the message names the path, the owner and the mode
     */
    public static Path ensure(Path dir) {
        try {
            if (!Files.exists(dir, LinkOption.NOFOLLOW_LINKS)) {
                createPrivate(dir);
            }
            checkPrivate(dir);
            return dir;
        } catch (IOException e) {
            throw new UncheckedIOException("cannot create kvmarket directory " + dir, e);
        }
    }

    private static void createPrivate(Path dir) throws IOException {
        Path parent = dir.toAbsolutePath().getParent();
        if (parent != null && !Files.exists(parent)) {
            createPrivate(parent);
        }
        try {
            Files.createDirectory(dir, PosixFilePermissions.asFileAttribute(PRIVATE_DIR));
            Files.setPosixFilePermissions(dir, PRIVATE_DIR); // exactly, whatever the umask
        } catch (FileAlreadyExistsException raced) {
            // another process created it meanwhile: checked like any existing directory
        }
    }

    private static void checkPrivate(Path dir) throws IOException {
        PosixFileAttributes attrs = Files.readAttributes(dir, PosixFileAttributes.class, LinkOption.NOFOLLOW_LINKS);
        String owner = attrs.owner().getName();
        String mode = PosixFilePermissions.toString(attrs.permissions());
        if (attrs.isSymbolicLink()) {
            throw refused(dir, "is a symbolic link", owner, mode);
        }
        if (!attrs.isDirectory()) {
            throw refused(dir, "is not a directory", owner, mode);
        }
        long uid = ((Number) Files.getAttribute(dir, "unix:uid", LinkOption.NOFOLLOW_LINKS)).longValue();
        long self = Uid.CURRENT;
        if (uid != self) {
            throw refused(dir, "belongs to another user (uid " + uid + ", this process runs as uid " + self + ")",
                    owner, mode);
        }
        if (!PRIVATE_DIR.containsAll(attrs.permissions())) {
            throw refused(dir, "is open to group or others", owner, mode);
        }
    }

    /**
     * Checks a file found in the node directory before it is trusted: a regular file (not a symbolic link, FIFO or
     * device) of this process's user that group and others cannot write.
     *
     * @throws IllegalStateException naming the path, owner and mode otherwise
     */
    public static void checkOwnFile(Path file) throws IOException {
        PosixFileAttributes attrs = Files.readAttributes(file, PosixFileAttributes.class, LinkOption.NOFOLLOW_LINKS);
        String owner = attrs.owner().getName();
        String mode = PosixFilePermissions.toString(attrs.permissions());
        if (!attrs.isRegularFile()) {
            throw refusedFile(file, attrs.isSymbolicLink() ? "is a symbolic link" : "is not a regular file", owner,
                    mode);
        }
        long uid = ((Number) Files.getAttribute(file, "unix:uid", LinkOption.NOFOLLOW_LINKS)).longValue();
        if (uid != Uid.CURRENT) {
            throw refusedFile(file, "belongs to another user (uid " + uid + ")", owner, mode);
        }
        Set<PosixFilePermission> p = attrs.permissions();
        if (p.contains(PosixFilePermission.GROUP_WRITE) || p.contains(PosixFilePermission.OTHERS_WRITE)) {
            throw refusedFile(file, "is writable by group or others", owner, mode);
        }
    }

    private static IllegalStateException refusedFile(Path file, String why, String owner, String mode) {
        return new IllegalStateException("refusing kvmarket file " + file + ": it " + why + " (owner " + owner
                + ", mode " + mode + "); remove it");
    }

    private static IllegalStateException refused(Path dir, String why, String owner, String mode) {
        return new IllegalStateException("refusing kvmarket directory " + dir + ": it " + why + " (owner " + owner
                + ", mode " + mode + "). It holds KV of every prompt of this user; remove it, or point kvmarket.dir "
                + "at a directory of your own with mode rwx------");
    }

    /** The effective uid of this process, which owns the files it creates. */
    static long currentUid() {
        return Uid.CURRENT;
    }

    private static final class Uid {
        static final long CURRENT = read();
    }

    private static long read() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
                if (line.startsWith("Uid:")) {
                    return Long.parseLong(line.substring(4).trim().split("\\s+")[1]);
                }
            }
        } catch (IOException | RuntimeException e) {
            // fall through: no /proc
        }
        // Without /proc, the owner of a file this process creates is its effective user.
        try {
            Path probe = Files.createTempFile("kvmarket-uid", ".probe");
            try {
                return ((Number) Files.getAttribute(probe, "unix:uid")).longValue();
            } finally {
                Files.deleteIfExists(probe);
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot tell this process's uid", e);
        }
    }
}
