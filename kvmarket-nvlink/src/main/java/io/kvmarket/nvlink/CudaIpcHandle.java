package io.kvmarket.nvlink;

import io.kvmarket.node.ProcessIdentity;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.regex.Pattern;
import java.util.zip.CRC32;

/**
 * The bytes an offer carries to name a CUDA allocation: CUDA's own 64-byte IPC handle framed with what the
 * importer must check before it maps anything. Decoding rejects anything malformed with a clear
 * {@link IllegalArgumentException}, before CUDA sees it.
 *
 * <pre>
 * Handle (124 bytes, little-endian):
 *   0  | magic 'KVMC' (4)        | version (2) | reserved (2) |
 *   8  | owner pid (8)                                       |
 *  16  | owner start time (8)                                |
 *  24  | allocation id, unique in the owner process (8)      |
 *  32  | size in bytes (8)                                   |
 *  40  | PCI bus id of the GPU, ASCII, NUL-padded (16)       |
 *  56  | cudaIpcMemHandle_t (64)                             |
 * 120  | CRC32 of bytes 0..119 (4)                           |
 * 124
 * </pre>
 *
 * <p>The GPU is named by PCI bus id ("0000:1b:00.0"), not ordinal: ordinals differ between processes.
 *
 * @param owner        process that allocated the memory
 * @param allocationId the owner's id of the allocation
 * @param size         bytes of the allocation
 * @param pciBusId     PCI bus id of the GPU holding the allocation, as cudaDeviceGetPCIBusId writes it
 * @param cudaHandle   the 64 bytes of {@code cudaIpcMemHandle_t}
 */
public record CudaIpcHandle(ProcessIdentity owner, long allocationId, long size, String pciBusId, byte[] cudaHandle) {

    public static final int CUDA_HANDLE_BYTES = 64;
    public static final int PCI_BUS_ID_BYTES = 16;
    public static final int BYTES = 124;
    private static final int MAGIC = 0x434d564b; // "KVMC" little-endian
    private static final short VERSION = 2;
    private static final int BUS_ID_OFFSET = 40;
    private static final int CUDA_HANDLE_OFFSET = 56;
    private static final int CRC_OFFSET = 120;
    /** domain:bus:device.function in hex, as CUDA and NVML write it. */
    private static final Pattern PCI_BUS_ID =
            Pattern.compile("[0-9a-fA-F]{1,8}:[0-9a-fA-F]{1,2}:[0-9a-fA-F]{1,2}\\.[0-7]");

    public CudaIpcHandle {
        if (cudaHandle.length != CUDA_HANDLE_BYTES) {
            throw new IllegalArgumentException("cudaIpcMemHandle_t is " + CUDA_HANDLE_BYTES + " bytes, got "
                    + cudaHandle.length);
        }
        if (pciBusId == null || pciBusId.length() > PCI_BUS_ID_BYTES || !PCI_BUS_ID.matcher(pciBusId).matches()) {
            throw new IllegalArgumentException("not a PCI bus id: " + pciBusId);
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
                .putLong(allocationId).putLong(size)
                .put(Arrays.copyOf(pciBusId.getBytes(StandardCharsets.US_ASCII), PCI_BUS_ID_BYTES)).put(cudaHandle);
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
        if (owner.pid() <= 0 || id <= 0 || size <= 0) {
            throw new IllegalArgumentException("CUDA IPC handle fields out of range: pid " + owner.pid() + ", id " + id
                    + ", size " + size);
        }
        int busIdLength = 0;
        while (busIdLength < PCI_BUS_ID_BYTES && bytes[BUS_ID_OFFSET + busIdLength] != 0) {
            busIdLength++;
        }
        String busId = new String(bytes, BUS_ID_OFFSET, busIdLength, StandardCharsets.US_ASCII);
        byte[] cuda = new byte[CUDA_HANDLE_BYTES];
        b.get(CUDA_HANDLE_OFFSET, cuda);
        return new CudaIpcHandle(owner, id, size, busId, cuda);
    }

    private static int crc(byte[] bytes) {
        CRC32 crc = new CRC32();
        crc.update(bytes, 0, CRC_OFFSET);
        return (int) crc.getValue();
    }
}
