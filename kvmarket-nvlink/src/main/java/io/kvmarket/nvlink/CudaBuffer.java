package io.kvmarket.nvlink;

import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.node.ProcessIdentity;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Pointer;

/** Device memory: a cudaMalloc allocation of this process, or a peer's allocation mapped by cudaIpcOpenMemHandle. */
public final class CudaBuffer implements DeviceBuffer {

    final Pointer pointer;
    final long size;
    final ProcessIdentity owner;
    final long allocationId;
    private final boolean peer;

    CudaBuffer(Pointer pointer, long size, ProcessIdentity owner, long allocationId, boolean peer) {
        this.pointer = pointer;
        this.size = size;
        this.owner = owner;
        this.allocationId = allocationId;
        this.peer = peer;
    }

    /** Device address, for native calls. */
    public long address() {
        return pointer.address();
    }

    /** A byte pointer {@code offset} bytes into this buffer, for host transfers (cudaMemcpy) in tools and tests. */
    public BytePointer at(long offset) {
        if (offset < 0 || offset > size) {
            throw new IllegalArgumentException("offset " + offset + " outside [0, " + size + "]");
        }
        return new BytePointer(pointer).position(offset);
    }

    @Override
    public long size() {
        return size;
    }

    @Override
    public boolean isPeerMapping() {
        return peer;
    }

    @Override
    public String toString() {
        return "CudaBuffer[" + (peer ? "peer " : "") + owner.pid() + "/" + allocationId + ", " + size + " bytes]";
    }
}
