package io.kvmarket.transfer.rdma;

import io.kvmarket.registry.Endpoint;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.UnknownHostException;
import java.nio.ByteBuffer;

/**
 * Where a node's RDMA transport serves one export pool: the control address members set up queue pairs through,
 * the port's GID and LID, and the pool's registration (remote key, address, length) that RDMA READs name.
 *
 * <pre>
 * Endpoint bytes (big-endian): version 1 (1) | address length 4 or 16 (1) | control address | control port (2)
 *                              | GID (16) | LID (2) | rkey (4) | pool address (8) | pool length (8)
 * </pre>
 */
record RdmaEndpoint(InetSocketAddress control, byte[] gid, int lid, int rkey, long address, long length) {

    private static final int VERSION = 1;

    Endpoint encode() {
        byte[] addr = control.getAddress().getAddress();
        ByteBuffer b = ByteBuffer.allocate(2 + addr.length + 2 + 16 + 2 + 4 + 8 + 8);
        b.put((byte) VERSION).put((byte) addr.length).put(addr).putShort((short) control.getPort()).put(gid)
                .putShort((short) lid).putInt(rkey).putLong(address).putLong(length);
        return new Endpoint(Endpoint.RDMA, b.array());
    }

    /**
     * @throws IllegalArgumentException when the bytes are not an RDMA endpoint of this version
     */
    static RdmaEndpoint decode(Endpoint e) {
        byte[] bytes = e.bytes();
        if (e.kind() != Endpoint.RDMA || bytes.length < 2 || bytes[0] != VERSION) {
            throw new IllegalArgumentException("not a version " + VERSION + " RDMA endpoint");
        }
        int addrLen = bytes[1];
        if ((addrLen != 4 && addrLen != 16) || bytes.length != 2 + addrLen + 2 + 16 + 2 + 4 + 8 + 8) {
            throw new IllegalArgumentException("RDMA endpoint of " + bytes.length + " bytes with a " + addrLen
                    + "-byte address");
        }
        ByteBuffer b = ByteBuffer.wrap(bytes, 2, bytes.length - 2);
        byte[] addr = new byte[addrLen];
        b.get(addr);
        int port = b.getShort() & 0xffff;
        byte[] gid = new byte[16];
        b.get(gid);
        int lid = b.getShort() & 0xffff;
        int rkey = b.getInt();
        long address = b.getLong();
        long length = b.getLong();
        InetAddress host;
        try {
            host = InetAddress.getByAddress(addr);
        } catch (UnknownHostException impossible) { // only for a wrong length, checked above
            throw new IllegalArgumentException(impossible);
        }
        if (port == 0 || host.isAnyLocalAddress() || host.isMulticastAddress()) {
            throw new IllegalArgumentException("RDMA endpoint names no one control server: "
                    + host.getHostAddress() + ":" + port);
        }
        if (address == 0 || length <= 0 || address + length < address) {
            throw new IllegalArgumentException("RDMA endpoint with a pool of " + length + " bytes at 0x"
                    + Long.toHexString(address));
        }
        return new RdmaEndpoint(new InetSocketAddress(host, port), gid, lid, rkey, address, length);
    }
}
