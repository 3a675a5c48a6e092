package io.kvmarket.transfer.tcp;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Configuration as a user writes it: a missing, loose or short secret, and bind addresses, each said plainly. */
class TcpTransportProviderTest {

    @TempDir
    Path dir;

    @AfterEach
    void clear() {
        System.clearProperty(TcpTransportProvider.SECRET_FILE);
        System.clearProperty(TcpTransportProvider.BIND);
        System.clearProperty(TcpTransportProvider.ADVERTISE);
        System.clearProperty(TcpTransportProvider.SEED_GBPS);
        System.clearProperty(TcpTransportProvider.CHUNK_MACS);
    }

    private Path secretFile(String content, String mode) throws Exception {
        Path f = dir.resolve("secret");
        Files.deleteIfExists(f);
        Files.writeString(f, content, StandardCharsets.UTF_8);
        Files.setPosixFilePermissions(f, PosixFilePermissions.fromString(mode));
        return f;
    }

    @Test
    void withoutASecretTheTransportIsUnavailableAndSaysWhy() {
        org.junit.jupiter.api.Assumptions.assumeTrue(System.getenv("KVMARKET_CLUSTER_SECRET") == null
                && System.getenv("KVMARKET_CLUSTER_SECRET_FILE") == null, "a cluster secret is set in the environment");
        String why = new TcpTransportProvider().unavailabilityCause().orElseThrow().getMessage();
        assertTrue(why.contains("no cluster secret") && why.contains("off"), why);
    }

    @Test
    void aSecretFileOthersMayReadIsRefused() throws Exception {
        System.setProperty(TcpTransportProvider.SECRET_FILE, secretFile("a-long-enough-cluster-secret", "rw-r--r--").toString());
        String why = new TcpTransportProvider().unavailabilityCause().orElseThrow().getMessage();
        assertTrue(why.contains("open to group or others"), why);
    }

    @Test
    void aShortOrEmptySecretFileIsRefusedNamingTheFile() throws Exception {
        for (String content : new String[] {"short\n", "", "\n", "fifteen-bytes!!\r\n"}) {
            Path f = secretFile(content, "rw-------");
            System.setProperty(TcpTransportProvider.SECRET_FILE, f.toString());
            String why = new TcpTransportProvider().unavailabilityCause().orElseThrow().getMessage();
            assertTrue(why.contains("at least " + ClusterSecret.MIN_BYTES) && why.contains(f.toString()), why);
        }
    }

    @Test
    void aSymlinkedSecretFileIsRefused() throws Exception {
        Path target = secretFile("a-long-enough-cluster-secret", "rw-------");
        Path link = Files.createSymbolicLink(dir.resolve("link"), target);
        System.setProperty(TcpTransportProvider.SECRET_FILE, link.toString());
        String why = new TcpTransportProvider().unavailabilityCause().orElseThrow().getMessage();
        assertTrue(why.contains("not a regular file"), why);
    }

    @Test
    void aPrivateSecretFileAndBindSettingsAreTaken() throws Exception {
        System.setProperty(TcpTransportProvider.SECRET_FILE, secretFile("a-long-enough-cluster-secret\n", "rw-------").toString());
        System.setProperty(TcpTransportProvider.BIND, "127.0.0.1:0");
        System.setProperty(TcpTransportProvider.ADVERTISE, "127.0.0.1");
        System.setProperty(TcpTransportProvider.SEED_GBPS, "2.5");
        assertTrue(new TcpTransportProvider().unavailabilityCause().isEmpty());
        TcpConfig c = TcpTransportProvider.configFromEnvironment();
        assertEquals(new InetSocketAddress("127.0.0.1", 0), c.bind());
        assertEquals("127.0.0.1", c.advertise().getHostAddress());
        assertEquals(2.5, c.seedGigabytesPerSecond());
        System.setProperty(TcpTransportProvider.BIND, "off");
        assertNull(TcpTransportProvider.configFromEnvironment().bind(), "off: fetch only");
    }

    @Test
    void malformedSettingsAreNamed() throws Exception {
        System.setProperty(TcpTransportProvider.SECRET_FILE, secretFile("a-long-enough-cluster-secret", "rw-------").toString());
        for (String bad : new String[] {"localhost", "host:port", "1.2.3.4:70000", "1.2.3.4:-1"}) {
            System.setProperty(TcpTransportProvider.BIND, bad);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    TcpTransportProvider::configFromEnvironment, bad);
            assertTrue(e.getMessage().contains(TcpTransportProvider.BIND), e.getMessage());
        }
        System.setProperty(TcpTransportProvider.BIND, "[::1]:0");
        assertTrue(TcpTransportProvider.configFromEnvironment().bind().getAddress().isLoopbackAddress());
        System.setProperty(TcpTransportProvider.BIND, ":7000");
        assertTrue(TcpTransportProvider.configFromEnvironment().bind().getAddress().isAnyLocalAddress());
        System.setProperty(TcpTransportProvider.SEED_GBPS, "fast");
        assertThrows(IllegalArgumentException.class, TcpTransportProvider::configFromEnvironment);
        System.setProperty(TcpTransportProvider.SEED_GBPS, "0");
        assertThrows(IllegalArgumentException.class, TcpTransportProvider::configFromEnvironment);
        System.clearProperty(TcpTransportProvider.SEED_GBPS);
        assertTrue(TcpTransportProvider.configFromEnvironment().chunkMacs(), "chunk MACs are on by default");
        System.setProperty(TcpTransportProvider.CHUNK_MACS, "false");
        assertTrue(!TcpTransportProvider.configFromEnvironment().chunkMacs());
        System.setProperty(TcpTransportProvider.CHUNK_MACS, "no");
        assertThrows(IllegalArgumentException.class, TcpTransportProvider::configFromEnvironment, "neither true nor false");
        System.setProperty(TcpTransportProvider.CHUNK_MACS, "true");
        System.setProperty(TcpTransportProvider.ADVERTISE, "0.0.0.0");
        assertThrows(IllegalArgumentException.class, TcpTransportProvider::configFromEnvironment, "a wildcard advertise");
    }
}
