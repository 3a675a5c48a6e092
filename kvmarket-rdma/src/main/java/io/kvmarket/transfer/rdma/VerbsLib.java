package io.kvmarket.transfer.rdma;

import org.bytedeco.javacpp.annotation.Cast;
import org.bytedeco.javacpp.annotation.CriticalRegion;
import org.bytedeco.javacpp.annotation.NoException;
import org.bytedeco.javacpp.annotation.Platform;

/**
 * JavaCPP binding of {@code src/main/native/kvm_rdma.h}; see that header for each function's contract. Raw and
 * unchecked: only {@link Verbs} and the classes it hands handles to call it. Every function returns 0 (or a count)
 * or a negative code.
 *
 * <p>The JNI library {@code libjnikvmrdma.so} links {@code libkvmrdma.so} (packaged next to it), which links
 * {@code libibverbs.so.1} dynamically: the system's rdma-core, or, in this module's tests, a fake provider found
 * first through {@code LD_LIBRARY_PATH}. libibverbs is deliberately not in {@code link}: JavaCPP would then load the
 * system's copy by path itself, ahead of the dynamic linker's search. Segment arrays of a post are JNI critical
 * regions (the post does not block); a poll's arrays are not (it sleeps on the completion channel).
 */
@Platform(value = "linux-x86_64", include = "kvm_rdma.h", link = "kvmrdma", library = "jnikvmrdma")
@NoException
final class VerbsLib {

    private VerbsLib() {
    }

    static native int kvm_rdma_probe(@Cast("char*") byte[] cause, int cap);

    static native int kvm_rdma_open(@Cast("const char*") String devName, int port, int gidIndex,
                                    @Cast("uint64_t*") long[] ctxOut, @Cast("int32_t*") int[] info,
                                    @Cast("uint8_t*") byte[] gid);

    static native int kvm_rdma_domain_open(@Cast("uint64_t") long ctx, @Cast("uint64_t*") long[] domainOut);

    static native int kvm_rdma_close(@Cast("uint64_t") long ctx);

    static native int kvm_rdma_reg(@Cast("uint64_t") long ctx, @Cast("uint64_t") long addr,
                                   @Cast("uint64_t") long length, int access, int cuda,
                                   @Cast("uint64_t*") long[] mrOut, @Cast("int32_t*") int[] lkey,
                                   @Cast("int32_t*") int[] rkey);

    static native int kvm_rdma_dereg(@Cast("uint64_t") long mr);

    static native int kvm_rdma_channel_create(@Cast("uint64_t") long ctx, int nqp, int sqDepth, int rqDepth,
                                              int access, @Cast("uint64_t*") long[] channelOut,
                                              @Cast("int32_t*") int[] qpns);

    static native int kvm_rdma_channel_connect(@Cast("uint64_t") long channel, @Cast("const int32_t*") int[] remoteQpns,
                                               @Cast("const uint8_t*") byte[] remoteGid, int remoteLid,
                                               @Cast("const int32_t*") int[] remotePsns,
                                               @Cast("const int32_t*") int[] localPsns, int mtu, int rdAtomic,
                                               int timeout, int retryCnt, int rnrRetry);

    static native int kvm_rdma_channel_fail(@Cast("uint64_t") long channel);

    static native int kvm_rdma_channel_destroy(@Cast("uint64_t") long channel);

    @CriticalRegion
    static native int kvm_rdma_post(@Cast("uint64_t") long channel, int op, @Cast("uint64_t") long wrIdBase,
                                    @Cast("uint64_t") long localBase, int lkey, @Cast("uint64_t") long remoteBase,
                                    int rkey, @Cast("const int64_t*") long[] localOff,
                                    @Cast("const int64_t*") long[] remoteOff, @Cast("const int64_t*") long[] len,
                                    int count, int imm);

    @CriticalRegion
    static native int kvm_rdma_post_keyed(@Cast("uint64_t") long channel, int op, @Cast("uint64_t") long wrIdBase,
                                          @Cast("uint64_t") long localBase, int lkey,
                                          @Cast("const int32_t*") int[] rkeys,
                                          @Cast("const int64_t*") long[] localOff,
                                          @Cast("const int64_t*") long[] remoteAddr,
                                          @Cast("const int64_t*") long[] len, int count, int imm);

    static native int kvm_rdma_post_recv(@Cast("uint64_t") long channel, @Cast("uint64_t") long wrIdBase, int count);

    static native int kvm_rdma_poll(@Cast("uint64_t") long channel, int max, int timeoutMs,
                                    @Cast("int64_t*") long[] wrIds, @Cast("int32_t*") int[] status,
                                    @Cast("int32_t*") int[] opcode, @Cast("int32_t*") int[] byteLen,
                                    @Cast("int32_t*") int[] imm, @Cast("int32_t*") int[] qpIndex);

    static native @Cast("const char*") String kvm_rdma_code_name(int code, int wc);

    static native @Cast("const char*") String kvm_rdma_error_string();

    static native void kvm_rdma_live(@Cast("int64_t*") long[] out);
}
