package io.kvmarket.transfer.rdma;

/**
 * One opened port of an RDMA device with its protection domain, or another protection domain on the same port
 * ({@link #openDomain}): what this process registers memory in and creates queue pairs on. Thread-safe; close it
 * after every registration, channel and domain made from it.
 */
final class VerbsContext implements AutoCloseable {

    static final int REMOTE_WRITE = 2;
    static final int REMOTE_READ = 4;
    static final int LOCAL_WRITE = 1;

    final long handle;
    final int port;
    final int lid;
    final int mtu;
    final int maxReadDepth;
    final int maxWorkRequests;
    final byte[] gid;
    private boolean closed;

    private VerbsContext(long handle, int[] info, byte[] gid) {
        this.handle = handle;
        this.port = info[0];
        this.lid = info[1];
        this.mtu = info[2];
        this.gid = gid;
        this.maxReadDepth = info[5];
        this.maxWorkRequests = info[6];
    }

    private VerbsContext(long handle, VerbsContext device) {
        this.handle = handle;
        this.port = device.port;
        this.lid = device.lid;
        this.mtu = device.mtu;
        this.gid = device.gid;
        this.maxReadDepth = device.maxReadDepth;
        this.maxWorkRequests = device.maxWorkRequests;
    }

    /**
     * A protection domain of its own on this device and port: its queue pairs reach only its registrations, and
     * this context's queue pairs none of its. Close it (after what was made in it) before this context.
     */
    VerbsContext openDomain() {
        long[] out = new long[1];
        Verbs.check("open a protection domain", VerbsLib.kvm_rdma_domain_open(handle, out));
        return new VerbsContext(out[0], this);
    }

    /**
     * @param device   device name, or null for the first with an ACTIVE port
     * @param port     port number, 0 for the device's first ACTIVE one
     * @param gidIndex GID index, -1 for the first non-zero GID
     */
    static VerbsContext open(String device, int port, int gidIndex) {
        Verbs.ensureAvailability();
        long[] out = new long[1];
        int[] info = new int[8];
        byte[] gid = new byte[16];
        Verbs.check("open " + (device == null ? "the first RDMA device" : device),
                VerbsLib.kvm_rdma_open(device, port, gidIndex, out, info, gid));
        return new VerbsContext(out[0], info, gid);
    }

    /**
     * Registers {@code [address, address + length)}.
     *
     * @param cuda whether the address is CUDA device memory (registered through a dma-buf, else nvidia-peermem)
     */
    MemoryRegion register(long address, long length, int access, boolean cuda) {
        long[] mr = new long[1];
        int[] lkey = new int[1];
        int[] rkey = new int[1];
        Verbs.check("register " + length + " bytes at 0x" + Long.toHexString(address),
                VerbsLib.kvm_rdma_reg(handle, address, length, access, cuda ? 1 : 0, mr, lkey, rkey));
        return new MemoryRegion(mr[0], address, length, lkey[0], rkey[0]);
    }

    @Override
    public synchronized void close() {
        if (!closed) { // closed only once it worked: a device still busy (EBUSY) can be closed again later
            Verbs.check("close the RDMA device", VerbsLib.kvm_rdma_close(handle));
            closed = true;
        }
    }

    /** A registration: the NIC reaches {@code [address, address + length)} through its keys until it is closed. */
    static final class MemoryRegion implements AutoCloseable {
        final long handle;
        final long address;
        final long length;
        final int lkey;
        final int rkey;
        private boolean closed;

        MemoryRegion(long handle, long address, long length, int lkey, int rkey) {
            this.handle = handle;
            this.address = address;
            this.length = length;
            this.lkey = lkey;
            this.rkey = rkey;
        }

        @Override
        public synchronized void close() {
            if (!closed) {
                Verbs.check("deregister memory", VerbsLib.kvm_rdma_dereg(handle));
                closed = true;
            }
        }
    }
}
