package io.kvmarket.transfer.tcp;

import io.kvmarket.registry.Endpoint;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.UnknownHostException;
import java.nio.ByteBuffer;

/**
 * Where a node's TCP transport serves one export pool: its address and the pool's id there.
 *
 * <pre>
 * Endpoint bytes (big-endian): version 1 (1) | address length 4 or 16 (1) | address | port (2) | pool id (8)
 * </pre>
 */
record TcpEndpoint(InetSocketAddress address, long poolId) {

    private static final int VERSION = 1;

    Endpoint encode() {
        byte[] addr = address.getAddress().getAddress();
        ByteBuffer b = ByteBuffer.allocate(2 + addr.length + 2 + 8);
        b.put((byte) VERSION).put((byte) addr.length).put(addr).putShort((short) address.getPort()).putLong(poolId);
        return new Endpoint(Endpoint.TCP, b.array());
    }

    /**
     * @throws IllegalArgumentException when the bytes are not a TCP endpoint of this version
     */
    static TcpEndpoint decode(Endpoint e) {
        byte[] bytes = e.bytes();
        if (e.kind() != Endpoint.TCP || bytes.length < 2 || bytes[0] != VERSION) {
            throw new IllegalArgumentException("not a version " + VERSION + " TCP endpoint");
        }
        int addrLen = bytes[1];
        if ((addrLen != 4 && addrLen != 16) || bytes.length != 2 + addrLen + 2 + 8) {
            throw new IllegalArgumentException("TCP endpoint of " + bytes.length + " bytes with a " + addrLen
                    + "-byte address");
        }
        ByteBuffer b = ByteBuffer.wrap(bytes, 2, bytes.length - 2);
        byte[] addr = new byte[addrLen];
        b.get(addr);
        int port = b.getShort() & 0xffff;
        if (port == 0) {
            throw new IllegalArgumentException("TCP endpoint with port 0");
        }
        InetAddress address;
        try {
            address = InetAddress.getByAddress(addr);
        } catch (UnknownHostException impossible) { // only for a wrong length, checked above
            throw new IllegalArgumentException(impossible);
        }
        if (address.isAnyLocalAddress() || address.isMulticastAddress()) {
            throw new IllegalArgumentException("TCP endpoint names no one host: " + address.getHostAddress());
        }
        return new TcpEndpoint(new InetSocketAddress(address, port), b.getLong());
    }
}
