package io.kvmarket.testkit;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.stream.Stream;

/** Directories a benchmark or test makes for its registry and host-device files, and removes after itself. */
public final class ScratchDir {

    /** RAM-backed, like a node directory, where the machine has one. */
    private static final Path SHM = Path.of("/dev/shm");

    private ScratchDir() {
    }

    /** A fresh directory named from {@code prefix} under /dev/shm when writable, else the JVM's temporary directory. */
    public static Path create(String prefix) {
        try {
            Path base = Files.isDirectory(SHM) && Files.isWritable(SHM) ? SHM
                    : Path.of(System.getProperty("java.io.tmpdir"));
            return Files.createTempDirectory(base, prefix);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot create a scratch directory", e);
        }
    }

    /** Deletes {@code dir} and everything under it; a no-op when it is gone. */
    public static void delete(Path dir) {
        if (dir == null || !Files.exists(dir)) {
            return;
        }
        try (Stream<Path> paths = Files.walk(dir)) {
            for (Path p : (Iterable<Path>) paths.sorted(Comparator.reverseOrder())::iterator) {
                Files.deleteIfExists(p);
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot delete " + dir, e);
        }
    }
}
