package io.kvmarket.node;

import java.net.InetAddress;
import java.net.UnknownHostException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;

/**
 * A 64-bit id of this machine, the same in every process on it: a hash of /etc/machine-id, else the host name.
 * {@code -Dkvmarket.node.id=NAME} (or {@code KVMARKET_NODE_ID}) names the node instead, for nodes that share a
 * machine id: containers of one image, or the network namespaces tests run nodes in.
 */
public final class NodeId {

    public static final String PROPERTY = "kvmarket.node.id";
    private static final long LOCAL = compute();

    private NodeId() {
    }

    public static long local() {
        return LOCAL;
    }

    private static long compute() {
        String source = System.getProperty(PROPERTY, System.getenv("KVMARKET_NODE_ID"));
        if (source != null && !source.isBlank()) {
            return hash("kvmarket-node:" + source.trim());
        }
        try {
            source = Files.readString(Path.of("/etc/machine-id")).trim();
        } catch (Exception e) {
            source = "";
        }
        if (source.isEmpty()) {
            try {
                source = InetAddress.getLocalHost().getHostName();
            } catch (UnknownHostException e) {
                source = "localhost";
            }
        }
        return hash(source);
    }

    private static long hash(String source) {
        try {
            byte[] d = MessageDigest.getInstance("SHA-256").digest(source.getBytes(StandardCharsets.UTF_8));
            return ByteBuffer.wrap(d).getLong();
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 missing", e);
        }
    }
}
