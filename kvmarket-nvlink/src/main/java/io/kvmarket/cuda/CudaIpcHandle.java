package io.kvmarket.cuda;

import io.kvmarket.node.ProcessIdentity;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.zip.CRC32;

/**
 * The bytes an offer carries to name a CUDA allocation: CUDA's own 64-byte IPC handle framed with what the
 * importer must check before it maps anything. Decoding rejects anything malformed with a clear
 * {@link IllegalArgumentException}, before CUDA sees it.
 *
 * <pre>
 * Handle (112 bytes, little-endian):
 *   0  | magic 'KVMC' (4)        | version (2) | reserved (2) |
 *   8  | owner pid (8)                                       |
 *  16  | owner start time (8)                                |
 *  24  | allocation id, unique in the owner process (8)      |
 *  32  | size in bytes (8)                                   |
 *  40  | device ordinal (4)                                  |
 *  44  | cudaIpcMemHandle_t (64)                             |
 * 108  | CRC32 of bytes 0..107 (4)                           |
 * 112
 * </pre>
 *
 * @param owner        process that allocated the memory
 * @param allocationId the owner's id of the allocation
 * @param size         bytes of the allocation
 * @param ordinal      CUDA device ordinal in the owner process
 * @param cudaHandle   the 64 bytes of {@code cudaIpcMemHandle_t}
 */
public record CudaIpcHandle(ProcessIdentity owner, long allocationId, long size, int ordinal, byte[] cudaHandle) {

    public static final int CUDA_HANDLE_BYTES = 64;
    public static final int BYTES = 112;
    private static final int MAGIC = 0x434d564b; // "KVMC" little-endian
    private static final short VERSION = 1;
    private static final int CRC_OFFSET = 108;

    public CudaIpcHandle {
        if (cudaHandle.length != CUDA_HANDLE_BYTES) {
            throw new IllegalArgumentException("cudaIpcMemHandle_t is " + CUDA_HANDLE_BYTES + " bytes, got "
                    + cudaHandle.length);
        }
        cudaHandle = cudaHandle.clone();
    }

    @Override
    public byte[] cudaHandle() {
        return cudaHandle.clone();
    }

    public byte[] encode() {
        ByteBuffer b = ByteBuffer.allocate(BYTES).order(ByteOrder.LITTLE_ENDIAN);
        b.putInt(MAGIC).putShort(VERSION).putShort((short) 0).putLong(owner.pid()).putLong(owner.startTime())
                .putLong(allocationId).putLong(size).putInt(ordinal).put(cudaHandle);
        b.putInt(crc(b.array()));
        return b.array();
    }

    /** @throws IllegalArgumentException for bytes that are not a well-formed handle */
    public static CudaIpcHandle decode(byte[] bytes) {
        if (bytes == null || bytes.length != BYTES) {
            throw new IllegalArgumentException("CUDA IPC handle must be " + BYTES + " bytes, was "
                    + (bytes == null ? "null" : bytes.length));
        }
        ByteBuffer b = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN);
        if (b.getInt(0) != MAGIC || b.getShort(4) != VERSION) {
            throw new IllegalArgumentException("not a kvmarket CUDA IPC handle (bad magic or version)");
        }
        if (b.getInt(CRC_OFFSET) != crc(bytes)) {
            throw new IllegalArgumentException("CUDA IPC handle checksum mismatch (corrupted handle)");
        }
        ProcessIdentity owner = new ProcessIdentity(b.getLong(8), b.getLong(16));
        long id = b.getLong(24);
        long size = b.getLong(32);
        int ordinal = b.getInt(40);
        if (owner.pid() <= 0 || id <= 0 || size <= 0 || ordinal < 0) {
            throw new IllegalArgumentException("CUDA IPC handle fields out of range: pid " + owner.pid() + ", id " + id
                    + ", size " + size + ", ordinal " + ordinal);
        }
        byte[] cuda = new byte[CUDA_HANDLE_BYTES];
        b.get(44, cuda);
        return new CudaIpcHandle(owner, id, size, ordinal, cuda);
    }

    private static int crc(byte[] bytes) {
        CRC32 crc = new CRC32();
        crc.update(bytes, 0, CRC_OFFSET);
        return (int) crc.getValue();
    }
}
