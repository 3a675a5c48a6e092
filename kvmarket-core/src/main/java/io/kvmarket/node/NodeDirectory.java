package io.kvmarket.node;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * The directory every process of one user on this node shares: the node-local registry file and the mock
 * device's memory files live here. RAM-backed /dev/shm where it exists, so nothing touches a disk.
 * {@code -Dkvmarket.dir=...} or {@code KVMARKET_DIR} overrides it (tests give each run its own).
 */
public final class NodeDirectory {

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

    /** Creates {@code dir} (and parents) when missing. */
    public static Path ensure(Path dir) {
        try {
            return Files.createDirectories(dir);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot create kvmarket directory " + dir, e);
        }
    }
}
