/*
 * kvm_copy.h - the C boundary of kvmarket-native.
 *
 * One import = one call: every (src_off[i], dst_off[i], len[i]) segment of an import is copied from
 * src_base + src_off[i] to dst_base + dst_off[i] on one CUDA stream, by one of two methods:
 *
 *   kvm_copy_memcpy_batch   cudaMemcpyBatchAsync, device-to-device, source accessed in stream order.
 *   kvm_copy_gather_kernel  a gather/scatter kernel; the segment table is uploaded once per call from a
 *                           pinned staging buffer into a device table owned by a per-(device, stream)
 *                           context; both grow on demand and are reused.
 *
 * Conventions shared by every function:
 *   - Device addresses are raw uint64 values (what cudaMalloc or cudaIpcOpenMemHandle returned).
 *   - stream is a cudaStream_t as uint64. 0 means the calling thread's per-thread default stream
 *     (cudaStreamPerThread), never the legacy NULL stream, which cudaMemcpyBatchAsync rejects.
 *   - The caller's current device must be the device that owns the stream and the memory.
 *   - Return 0 (or a count) on success, or a NEGATIVE code: KVM_EINVAL, KVM_ENOMEM, KVM_EINTERNAL, or
 *     -(KVM_ECUDA_BASE + cudaError_t) for a CUDA failure. Nothing else escapes (no C++ exceptions).
 *   - Copies are asynchronous: a 0 return means "enqueued"; errors of the copy itself surface at the
 *     next synchronizing call (kvm_stream_synchronize).
 *   - The segments of one call must not overlap in their destinations, nor a destination a source.
 */
#ifndef KVM_COPY_H
#define KVM_COPY_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KVM_OK 0
#define KVM_EINVAL (-1)     /* bad argument: count <= 0, null array, negative offset/length, null base */
#define KVM_ENOMEM (-2)     /* host allocation failed */
#define KVM_EINTERNAL (-3)  /* unexpected internal failure */
#define KVM_ECUDA_BASE 1000 /* code = -(KVM_ECUDA_BASE + cudaError_t) */

/* Number of CUDA devices (cudaGetDeviceCount), or a negative code (no driver, no device, ...). */
int kvm_cuda_probe(void);

/* Symbolic name of a code ("KVM_EINVAL", "cudaErrorInsufficientDriver"); static storage, never NULL. */
const char *kvm_error_name(int code);

/* Human-readable description of a code (CUDA's cudaGetErrorString for CUDA codes); never NULL. */
const char *kvm_error_string(int code);

/* Batched copy of count segments through cudaMemcpyBatchAsync. Zero-length segments are skipped. */
int kvm_copy_memcpy_batch(uint64_t src_base, uint64_t dst_base, const int64_t *src_off,
                          const int64_t *dst_off, const int64_t *len, int32_t count, uint64_t stream);

/* Batched copy of count segments through the gather/scatter kernel. Zero-length segments are skipped. */
int kvm_copy_gather_kernel(uint64_t src_base, uint64_t dst_base, const int64_t *src_off,
                           const int64_t *dst_off, const int64_t *len, int32_t count, uint64_t stream);

/* cudaStreamSynchronize(stream); 0 = the per-thread default stream. */
int kvm_stream_synchronize(uint64_t stream);

/*
 * Frees the kernel-path context of (current device, stream), after waiting for its last upload and
 * kernel. Call before destroying a stream that kvm_copy_gather_kernel used; 0 when there was none.
 */
int kvm_stream_release(uint64_t stream);

#ifdef __cplusplus
}
#endif

#endif /* KVM_COPY_H */
