package io.kvmarket.transfer.tcp;

import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.SecureRandom;

/**
 * The TCP transport's protocol, big-endian.
 *
 * <pre>
 * Handshake, once per connection (a challenge each way, so neither side can replay an old answer):
 *   server: MAGIC (4) | VERSION (2) | server nonce (32)
 *   client: MAGIC (4) | VERSION (2) | client nonce (32) | HMAC(secret, "client" | server nonce | client nonce) (32)
 *   server: HMAC(secret, "server" | client nonce | server nonce) (32), or it closes the connection
 * Both sides then hold a session key, HMAC(secret, "session" | server nonce | client nonce), that no one without
 * the secret can compute, relaying the handshake or not. Then any number of pulls, one at a time, the n-th of the
 * connection numbered n:
 *   request:  REQUEST (4) | flags (4) | pool id (8) | chunk count c (4)
 *             | c x (key hi, key lo, generation, offset, length: 8 each)
 *             | HMAC(session, n | all of the above) (32)
 *   response: per chunk, in order: DATA (1), the chunk's length bytes, and when flags has {@link #CHUNK_MACS}
 *             HMAC(session, n | chunk index | the chunk's request entry | its bytes) (32); or one stop status (1)
 *             that ends the response; after the last chunk, DONE (1)
 * </pre>
 * A server that takes control requests (another transport's setup between members, see {@link ControlChannel})
 * also answers, on the same connection and numbering:
 *   request:  CONTROL (4) | 0 (4) | 0 (8) | body length b (4) | body (b) | HMAC(session, n | all of the above) (32)
 *   answer:   length a (4) | body (a) | HMAC(session, n | "answer" | length | body) (32)
 * A chunk is served only while the pool publishes exactly that (key, generation, offset, length), held in place as
 * it streams; a stop status names why the rest is not served, so what arrived stays a prefix. The request's MAC keeps
 * a stranger who relayed a member's handshake from being served; a chunk's MAC binds its bytes to what was asked,
 * so bytes rewritten on the way never count as delivered.
 */
final class Wire {

    static final int MAGIC = 0x4B564D54; // "KVMT"
    static final short VERSION = 1;
    static final int REQUEST = 0x4B565251; // "KVRQ"
    static final int CONTROL = 0x4B564354; // "KVCT"
    static final int MAX_CONTROL_BYTES = 4096;
    private static final byte[] ANSWER = "answer".getBytes(StandardCharsets.US_ASCII);
    static final int NONCE_BYTES = 32;
    static final int MAC_BYTES = 32;
    static final int CHUNK_ENTRY_BYTES = 40;
    static final int REQUEST_HEADER_BYTES = 20;
    /** Request flag: a MAC follows every chunk's bytes. */
    static final int CHUNK_MACS = 1;

    static final byte DATA = 0;
    static final byte DONE = 1;
    /** The pool does not publish that chunk there now (evicted, withdrawn, closed, unknown pool). */
    static final byte NOT_OFFERED = 2;
    /** The span lies outside the pool's memory. */
    static final byte OUT_OF_RANGE = 3;

    private static final byte[] CLIENT = "client".getBytes(StandardCharsets.US_ASCII);
    private static final byte[] SERVER = "server".getBytes(StandardCharsets.US_ASCII);
    private static final byte[] SESSION = "session".getBytes(StandardCharsets.US_ASCII);
    private static final SecureRandom RANDOM = new SecureRandom();

    private Wire() {
    }

    /** The handshake failed: the peer is not a member of the cluster, or does not speak this protocol. */
    static final class NotAMemberException extends IOException {
        NotAMemberException(String message) {
            super(message);
        }
    }

    /** Proves membership both ways; returns the session key. */
    static byte[] serverHandshake(Connection c, ClusterSecret secret) throws IOException {
        byte[] serverNonce = nonce();
        ByteBuffer hello = ByteBuffer.allocate(6 + NONCE_BYTES);
        hello.putInt(MAGIC).putShort(VERSION).put(serverNonce).flip();
        c.writeFully(hello);
        ByteBuffer answer = ByteBuffer.allocate(6 + NONCE_BYTES + MAC_BYTES);
        c.readFully(answer);
        answer.flip();
        if (answer.getInt() != MAGIC || answer.getShort() != VERSION) {
            throw new NotAMemberException("peer " + c.peer + " does not speak kvmarket TCP version " + VERSION);
        }
        byte[] clientNonce = new byte[NONCE_BYTES];
        byte[] mac = new byte[MAC_BYTES];
        answer.get(clientNonce).get(mac);
        if (!secret.verify(secret.mac(CLIENT, serverNonce, clientNonce), mac)) {
            throw new NotAMemberException("peer " + c.peer + " does not hold the cluster secret");
        }
        c.writeFully(ByteBuffer.wrap(secret.mac(SERVER, clientNonce, serverNonce)));
        return secret.mac(SESSION, serverNonce, clientNonce);
    }

    /** Proves membership both ways; returns the session key. */
    static byte[] clientHandshake(Connection c, ClusterSecret secret) throws IOException {
        ByteBuffer hello = ByteBuffer.allocate(6 + NONCE_BYTES);
        c.readFully(hello);
        hello.flip();
        if (hello.getInt() != MAGIC || hello.getShort() != VERSION) {
            throw new NotAMemberException("server " + c.peer + " does not speak kvmarket TCP version " + VERSION);
        }
        byte[] serverNonce = new byte[NONCE_BYTES];
        hello.get(serverNonce);
        byte[] clientNonce = nonce();
        ByteBuffer answer = ByteBuffer.allocate(6 + NONCE_BYTES + MAC_BYTES);
        answer.putInt(MAGIC).putShort(VERSION).put(clientNonce).put(secret.mac(CLIENT, serverNonce, clientNonce))
                .flip();
        c.writeFully(answer);
        ByteBuffer proof = ByteBuffer.allocate(MAC_BYTES);
        try {
            c.readFully(proof);
        } catch (java.io.EOFException e) {
            throw new NotAMemberException("server " + c.peer + " closed the connection during the handshake: the "
                    + "cluster secrets differ, or the server is at its connection limit");
        }
        if (!secret.verify(secret.mac(SERVER, clientNonce, serverNonce), proof.array())) {
            throw new NotAMemberException("server " + c.peer + " does not hold the cluster secret");
        }
        return secret.mac(SESSION, serverNonce, clientNonce);
    }

    /**
     * Starts the MAC of chunk {@code index} of request {@code n}: over the request's entry for it (40 bytes of
     * {@code entries} at {@code entry}), then its bytes, then {@link #chunkMacEnd} into the tag.
     */
    static void chunkMacStart(Mac mac, long n, int index, byte[] entries, int entry) {
        mac.update(ByteBuffer.allocate(12).putLong(n).putInt(index).array());
        mac.update(entries, entry, CHUNK_ENTRY_BYTES);
    }

    static void chunkMacEnd(Mac mac, byte[] tag) {
        chunkMacEnd(mac, tag, 0);
    }

    private static void chunkMacEnd(Mac mac, byte[] out, int at) {
        try {
            mac.doFinal(out, at);
        } catch (javax.crypto.ShortBufferException impossible) { // the tag holds MAC_BYTES
            throw new IllegalStateException(impossible);
        }
    }

    /** The answer to control request {@code n}, as it goes on the wire: length, body, MAC. */
    static byte[] controlAnswer(Mac mac, long n, byte[] body) {
        ByteBuffer out = ByteBuffer.allocate(4 + body.length + MAC_BYTES);
        out.putInt(body.length).put(body);
        mac.update(ByteBuffer.allocate(8).putLong(0, n).array());
        mac.update(ANSWER);
        mac.update(out.array(), 0, 4 + body.length);
        chunkMacEnd(mac, out.array(), 4 + body.length);
        return out.array();
    }

    /** Checks the MAC of an answer to control request {@code n} and returns its body. */
    static byte[] controlAnswerBody(Mac mac, long n, byte[] lengthAndBody, byte[] tag) throws NotAMemberException {
        mac.update(ByteBuffer.allocate(8).putLong(0, n).array());
        mac.update(ANSWER);
        mac.update(lengthAndBody);
        if (!java.security.MessageDigest.isEqual(mac.doFinal(), tag)) {
            throw new NotAMemberException("control answer " + n + " fails its MAC");
        }
        return java.util.Arrays.copyOfRange(lengthAndBody, 4, lengthAndBody.length);
    }

    /** A fresh HMAC-SHA256 under the session key; one per connection side, used by one thread at a time. */
    static Mac sessionMac(byte[] sessionKey) {
        try {
            Mac mac = Mac.getInstance("HmacSHA256");
            mac.init(new SecretKeySpec(sessionKey, "HmacSHA256"));
            return mac;
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("HMAC-SHA256 is missing from this JVM", e);
        }
    }

    private static byte[] nonce() {
        byte[] n = new byte[NONCE_BYTES];
        RANDOM.nextBytes(n);
        return n;
    }
}
