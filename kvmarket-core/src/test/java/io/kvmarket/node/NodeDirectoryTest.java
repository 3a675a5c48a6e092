package io.kvmarket.node;

import io.kvmarket.device.host.HostDevice;
import io.kvmarket.registry.shm.NodeLocalRegistry;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/** The node directory holds every user's KV: only its owner may read it, and nobody else may plant it. */
class NodeDirectoryTest {

    @TempDir
    Path tmp;

    @Test
    void directoryAndEveryFileInItArePrivateToTheUser() throws Exception {
        Path node = tmp.resolve("a").resolve("node");
        try (NodeLocalRegistry registry = NodeLocalRegistry.open(node, 64); HostDevice device = new HostDevice(node)) {
            device.allocate(4096);
            assertEquals("rwx------", mode(node));
            assertEquals("rwx------", mode(node.resolve("host-device")));
            assertEquals("rw-------", mode(registry.file()));
            try (Stream<Path> memory = Files.list(node.resolve("host-device"))) {
                for (Path f : memory.toList()) {
                    assertEquals("rw-------", mode(f), f.toString());
                }
            }
        }
    }

    @Test
    void aDirectoryOpenToOthersIsRefusedWithPathOwnerAndMode() throws Exception {
        for (String perms : new String[] {"rwxr-xr-x", "rwx---rwx", "rwxrwx---"}) {
            Path planted = Files.createDirectory(tmp.resolve("planted-" + perms.replace('-', '_')));
            Files.setPosixFilePermissions(planted, PosixFilePermissions.fromString(perms));
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> NodeLocalRegistry.open(planted, 64));
            assertTrue(e.getMessage().contains(planted.toString()), e.getMessage());
            assertTrue(e.getMessage().contains(perms), e.getMessage());
            assertTrue(e.getMessage().contains(Files.getOwner(planted).getName()), e.getMessage());
            assertThrows(IllegalStateException.class, () -> new HostDevice(planted));
            assertEquals(0, Files.list(planted).count(), "nothing was written into a refused directory");
        }
    }

    @Test
    void aSymbolicLinkInPlaceOfTheDirectoryIsRefused() throws Exception {
        Path target = NodeDirectory.ensure(tmp.resolve("target"));
        Path link = Files.createSymbolicLink(tmp.resolve("link"), target);
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> NodeDirectory.ensure(link));
        assertTrue(e.getMessage().contains("symbolic link"), e.getMessage());
    }

    @Test
    void aDirectoryOwnedByAnotherUserIsRefused() throws Exception {
        assumeTrue(NodeDirectory.currentUid() == 0, "needs root to give a directory to another user; skipped");
        Path planted = Files.createDirectory(tmp.resolve("other-user"));
        Files.setPosixFilePermissions(planted, PosixFilePermissions.fromString("rwx------"));
        Files.setAttribute(planted, "unix:uid", 65534, LinkOption.NOFOLLOW_LINKS);
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> NodeLocalRegistry.open(planted, 64));
        assertTrue(e.getMessage().contains("65534") || e.getMessage().contains(Files.getOwner(planted).getName()),
                e.getMessage());
    }

    private static String mode(Path p) throws Exception {
        return PosixFilePermissions.toString(Files.getPosixFilePermissions(p, LinkOption.NOFOLLOW_LINKS));
    }
}
