package io.kvmarket.transfer.tcp;

import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermission;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.util.Arrays;
import java.util.Set;

/**
 * The secret every member of a cluster shares: a node serves KV only to peers that prove they hold it, and imports
 * only from peers that prove it back (an HMAC-SHA256 challenge per connection, {@link Wire}). It authenticates; it
 * does not encrypt.
 */
public final class ClusterSecret {

    /** Shorter secrets are refused: 16 bytes is the least that a guess cannot reach. */
    public static final int MIN_BYTES = 16;
    private static final String HMAC = "HmacSHA256";

    private final SecretKeySpec key;

    private ClusterSecret(byte[] secret) {
        if (secret.length < MIN_BYTES) {
            throw new IllegalArgumentException("a cluster secret needs at least " + MIN_BYTES + " bytes, got "
                    + secret.length);
        }
        this.key = new SecretKeySpec(secret, HMAC);
    }

    public static ClusterSecret of(byte[] secret) {
        return new ClusterSecret(secret.clone());
    }

    /**
     * Reads a secret file: its bytes, without a final newline. Refused when others than its owner may read or write
     * it, or when it is a symlink, as ssh refuses a private key open to others.
     *
     * @throws IllegalArgumentException naming the file and what is wrong with it
     */
    public static ClusterSecret fromFile(Path file) {
        try {
            if (!Files.isRegularFile(file, LinkOption.NOFOLLOW_LINKS)) {
                throw new IllegalArgumentException("cluster secret file " + file + " is not a regular file");
            }
            Set<PosixFilePermission> mode = Files.getPosixFilePermissions(file, LinkOption.NOFOLLOW_LINKS);
            for (PosixFilePermission p : mode) {
                if (p.name().startsWith("GROUP") || p.name().startsWith("OTHERS")) {
                    throw new IllegalArgumentException("cluster secret file " + file + " is open to group or others ("
                            + java.nio.file.attribute.PosixFilePermissions.toString(mode) + "): chmod 600 it");
                }
            }
            byte[] bytes = Files.readAllBytes(file);
            int n = bytes.length;
            while (n > 0 && (bytes[n - 1] == '\n' || bytes[n - 1] == '\r')) {
                n--;
            }
            if (n < MIN_BYTES) {
                throw new IllegalArgumentException("cluster secret file " + file + " holds " + n + " bytes (without a"
                        + " final newline); a cluster secret needs at least " + MIN_BYTES);
            }
            return new ClusterSecret(Arrays.copyOf(bytes, n));
        } catch (IOException | UnsupportedOperationException e) { // no POSIX modes: its privacy cannot be checked
            throw new IllegalArgumentException("cannot read cluster secret file " + file + ": " + e, e);
        }
    }

    /** HMAC-SHA256 of the parts, in order. */
    byte[] mac(byte[]... parts) {
        try {
            Mac mac = Mac.getInstance(HMAC);
            mac.init(key);
            for (byte[] p : parts) {
                mac.update(p);
            }
            return mac.doFinal();
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("HMAC-SHA256 is missing from this JVM", e);
        }
    }

    /** Compares in constant time, so a peer cannot learn a MAC byte by byte. */
    boolean verify(byte[] expectedMac, byte[] actual) {
        return MessageDigest.isEqual(expectedMac, actual);
    }

    @Override
    public String toString() {
        return "ClusterSecret[hidden]";
    }
}
