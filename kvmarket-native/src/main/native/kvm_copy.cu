/*
 * kvm_copy.cu - batched device-to-device copies for kvmarket-native. See kvm_copy.h for the contract.
 *
 * Built with nvcc for sm_90 (+ compute_90 PTX) into libkvmcopy.so, linked against the shared CUDA
 * runtime (libcudart.so.13). Uses the runtime API only: no libcuda link dependency.
 */
#include "kvm_copy.h"

#include <cuda_runtime.h>

#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

namespace {

/* One work item of the gather kernel: absolute device addresses and a byte count. */
struct Segment {
    uint64_t src;
    uint64_t dst;
    uint64_t len;
};

/* Segments longer than this are split on the host, so one huge segment still spreads over many blocks. */
constexpr uint64_t kChunkBytes = 256u * 1024u;
constexpr int kThreadsPerBlock = 256;
constexpr uint64_t kMaxBlocks = 65535u;
constexpr size_t kMinTableEntries = 1024;

inline int cuda_code(cudaError_t e) { return e == cudaSuccess ? KVM_OK : -(KVM_ECUDA_BASE + (int) e); }

inline bool is_cuda_code(int code) { return code <= -KVM_ECUDA_BASE; }

inline cudaStream_t to_stream(uint64_t stream) {
    return stream == 0 ? cudaStreamPerThread : reinterpret_cast<cudaStream_t>(stream);
}

/* Checks the arguments shared by both copy methods; counts the bytes-carrying segments. */
int validate(uint64_t src_base, uint64_t dst_base, const int64_t *src_off, const int64_t *dst_off,
             const int64_t *len, int32_t count) {
    if (count <= 0 || src_off == nullptr || dst_off == nullptr || len == nullptr || src_base == 0 ||
        dst_base == 0) {
        return KVM_EINVAL;
    }
    for (int32_t i = 0; i < count; i++) {
        if (src_off[i] < 0 || dst_off[i] < 0 || len[i] < 0) {
            return KVM_EINVAL;
        }
        uint64_t s_end = (uint64_t) src_off[i] + (uint64_t) len[i];
        uint64_t d_end = (uint64_t) dst_off[i] + (uint64_t) len[i];
        if (src_base + s_end < src_base || dst_base + d_end < dst_base) {
            return KVM_EINVAL;
        }
    }
    return KVM_OK;
}

/*
 * Copies one segment with `nthreads` cooperating threads, this one being `tid`: 16-byte vector loads and
 * stores when both addresses are 16-byte aligned (the tail of < 16 bytes by bytes), byte by byte
 * otherwise. Host-callable too, so the self-test can run it without a GPU.
 */
__host__ __device__ inline void copy_segment(const Segment &seg, uint64_t tid, uint64_t nthreads) {
    const unsigned char *src = reinterpret_cast<const unsigned char *>(seg.src);
    unsigned char *dst = reinterpret_cast<unsigned char *>(seg.dst);
    const uint64_t step = nthreads;
    uint64_t done = 0;
    if (((seg.src | seg.dst) & 15u) == 0) {
        const uint4 *s4 = reinterpret_cast<const uint4 *>(src);
        uint4 *d4 = reinterpret_cast<uint4 *>(dst);
        const uint64_t nvec = seg.len >> 4;
        uint64_t i = tid;
        for (; i + 3 * step < nvec; i += 4 * step) {
            const uint4 a = s4[i];
            const uint4 b = s4[i + step];
            const uint4 c = s4[i + 2 * step];
            const uint4 d = s4[i + 3 * step];
            d4[i] = a;
            d4[i + step] = b;
            d4[i + 2 * step] = c;
            d4[i + 3 * step] = d;
        }
        for (; i < nvec; i += step) {
            d4[i] = s4[i];
        }
        done = nvec << 4;
    }
    for (uint64_t i = done + tid; i < seg.len; i += step) {
        dst[i] = src[i];
    }
}

/* Blocks take whole table entries, grid-stride; the threads of a block share the entry. */
__global__ void gather_copy_kernel(const Segment *__restrict__ table, uint64_t n) {
    for (uint64_t s = blockIdx.x; s < n; s += gridDim.x) {
        copy_segment(table[s], threadIdx.x, blockDim.x);
    }
}

/* Number of table entries for these (validated) lengths: one per started kChunkBytes. */
size_t table_entries(const int64_t *len, int32_t count) {
    size_t items = 0;
    for (int32_t i = 0; i < count; i++) {
        items += (size_t) (((uint64_t) len[i] + kChunkBytes - 1) / kChunkBytes);
    }
    return items;
}

/* Writes table_entries(len, count) entries: absolute addresses, segments split at kChunkBytes. */
void fill_table(Segment *t, uint64_t src_base, uint64_t dst_base, const int64_t *src_off, const int64_t *dst_off,
                const int64_t *len, int32_t count) {
    size_t k = 0;
    for (int32_t i = 0; i < count; i++) {
        const uint64_t src = src_base + (uint64_t) src_off[i];
        const uint64_t dst = dst_base + (uint64_t) dst_off[i];
        const uint64_t n = (uint64_t) len[i];
        for (uint64_t at = 0; at < n; at += kChunkBytes) {
            const uint64_t part = n - at < kChunkBytes ? n - at : kChunkBytes;
            t[k].src = src + at;
            t[k].dst = dst + at;
            t[k].len = part;
            k++;
        }
    }
}

/* Pinned host copy of one segment table; `uploaded` completes when the device has read it. */
struct Staging {
    Segment *table = nullptr; /* cudaMallocHost */
    size_t capacity = 0;      /* entries */
    cudaEvent_t uploaded = nullptr;
};

/*
 * Per-(device, stream) state of the kernel path. Events make reuse safe even if a context is shared or
 * its stream handle is recycled: a staging slot is refilled only after its `uploaded` event (the host
 * waits; with kStagingSlots slots it waits only when that many uploads are still queued), and the device
 * table is overwritten only after `consumed` (the previous kernel; the stream waits, not the host).
 */
struct Context {
    static constexpr int kStagingSlots = 4;

    std::mutex mu;
    Staging staging[kStagingSlots];
    unsigned next_slot = 0;
    Segment *dev_table = nullptr; /* cudaMalloc */
    size_t dev_capacity = 0;      /* entries */
    cudaEvent_t consumed = nullptr;
    bool used = false;

    ~Context() {
        if (consumed != nullptr) {
            cudaEventSynchronize(consumed);
            cudaEventDestroy(consumed);
        }
        for (Staging &st : staging) {
            if (st.uploaded != nullptr) {
                cudaEventSynchronize(st.uploaded);
                cudaEventDestroy(st.uploaded);
            }
            if (st.table != nullptr) {
                cudaFreeHost(st.table);
            }
        }
        if (dev_table != nullptr) {
            cudaFree(dev_table);
        }
    }

    static int create_event(cudaEvent_t *e) {
        if (*e != nullptr) {
            return KVM_OK;
        }
        int rc = cuda_code(cudaEventCreateWithFlags(e, cudaEventDisableTiming));
        if (rc != KVM_OK) {
            *e = nullptr;
        }
        return rc;
    }

    static size_t grown(size_t capacity, size_t needed) {
        size_t c = capacity < kMinTableEntries ? kMinTableEntries : capacity;
        while (c < needed) {
            c *= 2;
        }
        return c;
    }

    /* The next staging slot, idle and holding at least `entries`. */
    int acquire_staging(size_t entries, Staging **out) {
        Staging &st = staging[next_slot % kStagingSlots];
        int rc = create_event(&st.uploaded);
        if (rc != KVM_OK || (rc = cuda_code(cudaEventSynchronize(st.uploaded))) != KVM_OK) {
            return rc;
        }
        if (entries > st.capacity) {
            size_t c = grown(st.capacity, entries);
            if (st.table != nullptr) {
                cudaFreeHost(st.table);
                st.table = nullptr;
                st.capacity = 0;
            }
            void *p = nullptr;
            if ((rc = cuda_code(cudaMallocHost(&p, c * sizeof(Segment)))) != KVM_OK) {
                return rc;
            }
            st.table = static_cast<Segment *>(p);
            st.capacity = c;
        }
        next_slot++;
        *out = &st;
        return KVM_OK;
    }

    int reserve_device(size_t entries) {
        int rc = create_event(&consumed);
        if (rc != KVM_OK || entries <= dev_capacity) {
            return rc;
        }
        size_t c = grown(dev_capacity, entries);
        if (dev_table != nullptr) {
            if ((rc = cuda_code(cudaEventSynchronize(consumed))) != KVM_OK) {
                return rc;
            }
            cudaFree(dev_table);
            dev_table = nullptr;
            dev_capacity = 0;
        }
        void *p = nullptr;
        if ((rc = cuda_code(cudaMalloc(&p, c * sizeof(Segment)))) != KVM_OK) {
            return rc;
        }
        dev_table = static_cast<Segment *>(p);
        dev_capacity = c;
        return KVM_OK;
    }
};

/* Never destroyed: at exit a destructor would free CUDA memory after the runtime itself may have unloaded. */
std::mutex &g_contexts_mu = *new std::mutex;
std::map<std::pair<int, uint64_t>, std::shared_ptr<Context>> &g_contexts =
    *new std::map<std::pair<int, uint64_t>, std::shared_ptr<Context>>;

int context_for(uint64_t stream, std::shared_ptr<Context> *out) {
    int device = 0;
    int rc = cuda_code(cudaGetDevice(&device));
    if (rc != KVM_OK) {
        return rc;
    }
    std::lock_guard<std::mutex> lock(g_contexts_mu);
    std::shared_ptr<Context> &slot = g_contexts[std::make_pair(device, stream)];
    if (!slot) {
        slot = std::make_shared<Context>();
    }
    *out = slot;
    return KVM_OK;
}

int gather_kernel(uint64_t src_base, uint64_t dst_base, const int64_t *src_off, const int64_t *dst_off,
                  const int64_t *len, int32_t count, uint64_t stream) {
    int rc = validate(src_base, dst_base, src_off, dst_off, len, count);
    if (rc != KVM_OK) {
        return rc;
    }
    const size_t items = table_entries(len, count);
    if (items == 0) {
        return KVM_OK;
    }
    std::shared_ptr<Context> ctx;
    rc = context_for(stream, &ctx);
    if (rc != KVM_OK) {
        return rc;
    }
    const cudaStream_t s = to_stream(stream);
    std::lock_guard<std::mutex> lock(ctx->mu);
    Staging *st = nullptr;
    if ((rc = ctx->acquire_staging(items, &st)) != KVM_OK || (rc = ctx->reserve_device(items)) != KVM_OK) {
        return rc;
    }
    fill_table(st->table, src_base, dst_base, src_off, dst_off, len, count);
    /* Same stream: already ordered, a cheap no-op. Another stream, or a recycled handle: waits. */
    if (ctx->used && (rc = cuda_code(cudaStreamWaitEvent(s, ctx->consumed, 0))) != KVM_OK) {
        return rc;
    }
    if ((rc = cuda_code(cudaMemcpyAsync(ctx->dev_table, st->table, items * sizeof(Segment), cudaMemcpyHostToDevice,
                                        s))) != KVM_OK) {
        return rc;
    }
    if ((rc = cuda_code(cudaEventRecord(st->uploaded, s))) != KVM_OK) {
        return rc;
    }
    const unsigned int blocks = (unsigned int) (items < kMaxBlocks ? items : kMaxBlocks);
    /* The runtime keeps the last failed call's error per thread; clear it so the check below sees this launch. */
    (void) cudaGetLastError();
    gather_copy_kernel<<<blocks, kThreadsPerBlock, 0, s>>>(ctx->dev_table, (uint64_t) items);
    if ((rc = cuda_code(cudaGetLastError())) != KVM_OK) {
        return rc;
    }
    if ((rc = cuda_code(cudaEventRecord(ctx->consumed, s))) != KVM_OK) {
        return rc;
    }
    ctx->used = true;
    return KVM_OK;
}

int memcpy_batch(uint64_t src_base, uint64_t dst_base, const int64_t *src_off, const int64_t *dst_off,
                 const int64_t *len, int32_t count, uint64_t stream) {
    int rc = validate(src_base, dst_base, src_off, dst_off, len, count);
    if (rc != KVM_OK) {
        return rc;
    }
    thread_local std::vector<void *> dsts;
    thread_local std::vector<const void *> srcs;
    thread_local std::vector<size_t> sizes;
    dsts.clear();
    srcs.clear();
    sizes.clear();
    for (int32_t i = 0; i < count; i++) {
        if (len[i] == 0) {
            continue;
        }
        dsts.push_back(reinterpret_cast<void *>(dst_base + (uint64_t) dst_off[i]));
        srcs.push_back(reinterpret_cast<const void *>(src_base + (uint64_t) src_off[i]));
        sizes.push_back((size_t) len[i]);
    }
    if (sizes.empty()) {
        return KVM_OK;
    }
    int device = 0;
    if ((rc = cuda_code(cudaGetDevice(&device))) != KVM_OK) {
        return rc;
    }
    cudaMemcpyAttributes attrs;
    std::memset(&attrs, 0, sizeof(attrs));
    attrs.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
    attrs.srcLocHint.type = cudaMemLocationTypeDevice;
    attrs.srcLocHint.id = device;
    attrs.dstLocHint.type = cudaMemLocationTypeDevice;
    attrs.dstLocHint.id = device;
    attrs.flags = 0;
    size_t attrs_idx = 0;
    return cuda_code(cudaMemcpyBatchAsync(dsts.data(), srcs.data(), sizes.data(), sizes.size(), &attrs,
                                          &attrs_idx, 1, to_stream(stream)));
}

int stream_release(uint64_t stream) {
    int device = 0;
    int rc = cuda_code(cudaGetDevice(&device));
    if (rc != KVM_OK) {
        return rc;
    }
    std::shared_ptr<Context> ctx;
    {
        std::lock_guard<std::mutex> lock(g_contexts_mu);
        auto it = g_contexts.find(std::make_pair(device, stream));
        if (it == g_contexts.end()) {
            return KVM_OK;
        }
        ctx = std::move(it->second);
        g_contexts.erase(it);
    }
    /* The last holder frees; the destructor waits for the context's events first. */
    ctx.reset();
    return KVM_OK;
}

template <typename F>
int guarded(F f) {
    try {
        return f();
    } catch (const std::bad_alloc &) {
        return KVM_ENOMEM;
    } catch (...) {
        return KVM_EINTERNAL;
    }
}

} // namespace

extern "C" {

int kvm_cuda_probe(void) {
    return guarded([] {
        int n = 0;
        int rc = cuda_code(cudaGetDeviceCount(&n));
        return rc != KVM_OK ? rc : n;
    });
}

const char *kvm_error_name(int code) {
    if (code >= 0) {
        return "KVM_OK";
    }
    if (is_cuda_code(code)) {
        return cudaGetErrorName((cudaError_t) (-code - KVM_ECUDA_BASE));
    }
    switch (code) {
    case KVM_EINVAL:
        return "KVM_EINVAL";
    case KVM_ENOMEM:
        return "KVM_ENOMEM";
    case KVM_EINTERNAL:
        return "KVM_EINTERNAL";
    default:
        return "KVM_UNKNOWN";
    }
}

const char *kvm_error_string(int code) {
    if (code >= 0) {
        return "no error";
    }
    if (is_cuda_code(code)) {
        return cudaGetErrorString((cudaError_t) (-code - KVM_ECUDA_BASE));
    }
    switch (code) {
    case KVM_EINVAL:
        return "invalid argument (count <= 0, null array or base, negative or overflowing offset/length)";
    case KVM_ENOMEM:
        return "host memory allocation failed";
    case KVM_EINTERNAL:
        return "unexpected internal failure in kvmarket-native";
    default:
        return "unknown kvmarket-native error code";
    }
}

int kvm_copy_memcpy_batch(uint64_t src_base, uint64_t dst_base, const int64_t *src_off,
                          const int64_t *dst_off, const int64_t *len, int32_t count, uint64_t stream) {
    return guarded([&] { return memcpy_batch(src_base, dst_base, src_off, dst_off, len, count, stream); });
}

int kvm_copy_gather_kernel(uint64_t src_base, uint64_t dst_base, const int64_t *src_off,
                           const int64_t *dst_off, const int64_t *len, int32_t count, uint64_t stream) {
    return guarded([&] { return gather_kernel(src_base, dst_base, src_off, dst_off, len, count, stream); });
}

int kvm_stream_synchronize(uint64_t stream) {
    return guarded([&] { return cuda_code(cudaStreamSynchronize(to_stream(stream))); });
}

int kvm_stream_release(uint64_t stream) {
    return guarded([&] { return stream_release(stream); });
}

} // extern "C"
