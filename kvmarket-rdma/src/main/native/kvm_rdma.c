/*
 * kvm_rdma.c - implementation of kvm_rdma.h: a small shim over libibverbs (see the header for the contract).
 *
 * Build (the Maven build runs this):
 *   gcc -O2 -g -fPIC -shared -Wall -Wextra -Werror -pthread -o OUT/libkvmrdma.so kvm_rdma.c -libverbs -ldl
 *
 * Link-time dependencies: libibverbs.so.1 (IBVERBS_1.0 / IBVERBS_1.1 symbols only) and libc. libcuda.so.1 and
 * ibv_reg_dmabuf_mr (IBVERBS_1.12, rdma-core >= 34) are looked up at run time, only for CUDA registrations, so the
 * library also loads on older rdma-core and on hosts without a GPU driver.
 */
#define _GNU_SOURCE
#include "kvm_rdma.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <infiniband/verbs.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KVM_MAX_QP 64
/* Most SGEs per work request: segments back to back at the remote end that one READ or WRITE carries. */
#define KVM_MAX_SGE 16
#define KVM_ACK_BATCH 32 /* acknowledge CQ events in batches of this many (ibv_ack_cq_events takes a lock) */
#define KVM_POLL_CHUNK 32

/* ---------------------------------------------------------------------------------------------------------------- */
/* errors */

static __thread char tls_err[512];

static void set_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void set_err(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tls_err, sizeof tls_err, fmt, ap);
    va_end(ap);
}

/* errno text that is safe to call from any thread */
static const char *err_text(int e, char *buf, size_t cap)
{
    return strerror_r(e, buf, cap); /* GNU variant: returns a pointer to the text */
}

/* The errno a failing verbs call left: verbs functions return a positive errno, -1 with errno, or NULL with errno. */
static int verbs_errno(int rc)
{
    if (rc > 0)
        return rc;
    if (rc < 0 && -rc < KVM_RDMA_ERRNO_BASE && rc != -1)
        return -rc;
    return errno > 0 ? errno : EIO;
}

static int fail_errno(int e, const char *call, const char *what_fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail_errno(int e, const char *call, const char *what_fmt, ...)
{
    char what[256], eb[128];
    va_list ap;
    va_start(ap, what_fmt);
    vsnprintf(what, sizeof what, what_fmt, ap);
    va_end(ap);
    if (e <= 0)
        e = EIO;
    set_err("%s on %s failed: %s (errno %d)", call, what, err_text(e, eb, sizeof eb), e);
    return -(KVM_RDMA_ERRNO_BASE + e);
}

#define FAIL(code, ...) (set_err(__VA_ARGS__), (code))

/* ---------------------------------------------------------------------------------------------------------------- */
/* live counters */

enum { LIVE_CTX, LIVE_MR, LIVE_CHANNEL, LIVE_QP };
static atomic_llong live_count[4];

static void live_add(int which, long long d)
{
    atomic_fetch_add_explicit(&live_count[which], d, memory_order_relaxed);
}

/* ---------------------------------------------------------------------------------------------------------------- */
/* objects */

struct kvm_ctx {
    struct ibv_context *verbs;
    struct ibv_pd *pd;
    struct kvm_ctx *parent; /* a domain's context (kvm_rdma_domain_open): shares its device, owns only its PD */
    char name[IBV_SYSFS_NAME_MAX];
    uint8_t port;
    uint8_t link_layer; /* IBV_LINK_LAYER_* (UNSPECIFIED reported as INFINIBAND) */
    uint16_t lid;
    int gid_index;
    enum ibv_mtu active_mtu;
    int max_qp_rd_atom;      /* responder depth limit */
    int max_qp_init_rd_atom; /* initiator depth limit */
    int max_qp_wr;
    int max_cqe;
    int max_sge;    /* SGEs per send work request (min of the device's and KVM_MAX_SGE) */
    int max_sge_rd; /* SGEs per RDMA READ work request */
    atomic_int users; /* open MRs + channels */
};

struct kvm_mr {
    struct kvm_ctx *ctx;
    struct ibv_mr *mr;
};

enum { CH_INIT = 0, CH_CONNECTED = 1, CH_ERROR = 2 };

struct kvm_channel {
    struct kvm_ctx *ctx;
    int nqp;
    int sq_depth;
    int rq_depth;
    int state;
    int armed;             /* ibv_req_notify_cq requested and its event not yet taken */
    unsigned int unacked;  /* CQ events taken and not yet acknowledged */
    struct ibv_comp_channel *cc;
    struct ibv_cq *cq;
    struct ibv_qp *qp[KVM_MAX_QP];
    uint32_t qpn[KVM_MAX_QP];
    void *scratch; /* WR + SGE arrays for kvm_rdma_post / kvm_rdma_post_recv, grown on demand */
    size_t scratch_cap;
};

static inline void *ptr_of(uint64_t h)
{
    return (void *)(uintptr_t)h;
}

static inline uint64_t handle_of(const void *p)
{
    return (uint64_t)(uintptr_t)p;
}

/* ---------------------------------------------------------------------------------------------------------------- */
/* names */

const char *kvm_rdma_code_name(int32_t code, int32_t wc)
{
    if (wc)
        return ibv_wc_status_str((enum ibv_wc_status)code);
    switch (code) {
    case KVM_RDMA_OK: return "KVM_RDMA_OK";
    case KVM_RDMA_EINVAL: return "KVM_RDMA_EINVAL";
    case KVM_RDMA_ENOMEM: return "KVM_RDMA_ENOMEM";
    case KVM_RDMA_ENODEV: return "KVM_RDMA_ENODEV";
    case KVM_RDMA_ENOPORT: return "KVM_RDMA_ENOPORT";
    case KVM_RDMA_ESTATE: return "KVM_RDMA_ESTATE";
    case KVM_RDMA_ETIMEDOUT: return "KVM_RDMA_ETIMEDOUT";
    default: break;
    }
    if (code > 0)
        return "KVM_RDMA_COUNT";
    if (code <= -KVM_RDMA_ERRNO_BASE) {
        switch (-code - KVM_RDMA_ERRNO_BASE) {
        case EPERM: return "EPERM";
        case ENOENT: return "ENOENT";
        case EINTR: return "EINTR";
        case EIO: return "EIO";
        case ENXIO: return "ENXIO";
        case EBADF: return "EBADF";
        case EAGAIN: return "EAGAIN";
        case ENOMEM: return "ENOMEM";
        case EACCES: return "EACCES";
        case EFAULT: return "EFAULT";
        case EBUSY: return "EBUSY";
        case EEXIST: return "EEXIST";
        case ENODEV: return "ENODEV";
        case EINVAL: return "EINVAL";
        case EMFILE: return "EMFILE";
        case ENOSPC: return "ENOSPC";
        case ERANGE: return "ERANGE";
        case ENOSYS: return "ENOSYS";
        case ENODATA: return "ENODATA";
        case EPROTO: return "EPROTO";
        case EOVERFLOW: return "EOVERFLOW";
        case EOPNOTSUPP: return "EOPNOTSUPP";
        case ENETDOWN: return "ENETDOWN";
        case ECONNRESET: return "ECONNRESET";
        case ETIMEDOUT: return "ETIMEDOUT";
        case ECONNREFUSED: return "ECONNREFUSED";
        case EHOSTUNREACH: return "EHOSTUNREACH";
        default: return "KVM_RDMA_ERRNO";
        }
    }
    return "KVM_RDMA_UNKNOWN";
}

const char *kvm_rdma_error_string(void)
{
    return tls_err;
}

void kvm_rdma_live(int64_t *out)
{
    if (!out)
        return;
    for (int i = 0; i < 4; i++)
        out[i] = (int64_t)atomic_load_explicit(&live_count[i], memory_order_relaxed);
}

/* ---------------------------------------------------------------------------------------------------------------- */
/* probe / open / close */

static void cause_append(char *cause, int32_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void cause_append(char *cause, int32_t cap, const char *fmt, ...)
{
    if (!cause || cap <= 0)
        return;
    size_t used = strnlen(cause, (size_t)cap);
    if (used + 1 >= (size_t)cap)
        return;
    if (used > 0) {
        snprintf(cause + used, (size_t)cap - used, "; ");
        used = strnlen(cause, (size_t)cap);
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cause + used, (size_t)cap - used, fmt, ap);
    va_end(ap);
}

/* Number of the first ACTIVE port of an open device (0 if none), or -errno with tls_err set when a query failed. */
static int first_active_port(struct ibv_context *vc, const char *name)
{
    struct ibv_device_attr da;
    int rc = ibv_query_device(vc, &da);
    if (rc) {
        int e = verbs_errno(rc);
        fail_errno(e, "ibv_query_device", "%s", name);
        return -e;
    }
    for (int p = 1; p <= da.phys_port_cnt; p++) {
        struct ibv_port_attr pa;
        rc = ibv_query_port(vc, (uint8_t)p, &pa);
        if (rc) {
            int e = verbs_errno(rc);
            fail_errno(e, "ibv_query_port", "%s port %d", name, p);
            return -e;
        }
        if (pa.state == IBV_PORT_ACTIVE)
            return p;
    }
    return 0;
}

int kvm_rdma_probe(char *cause, int32_t cap)
{
    if (cause && cap > 0)
        cause[0] = '\0';
    int n = 0;
    errno = 0;
    struct ibv_device **list = ibv_get_device_list(&n);
    if (!list) {
        int e = errno > 0 ? errno : EIO;
        char eb[128];
        if (e == ENOSYS || e == ENOENT) {
            /* rdma-core says ENOSYS when the kernel has no verbs support (no /sys/class/infiniband_verbs) */
            set_err("ibv_get_device_list failed: %s (errno %d): no RDMA device", err_text(e, eb, sizeof eb), e);
            cause_append(cause, cap, "no RDMA device");
            return 0;
        }
        cause_append(cause, cap, "ibv_get_device_list: %s", err_text(e, eb, sizeof eb));
        return fail_errno(e, "ibv_get_device_list", "the verbs stack");
    }
    int active = 0;
    for (int i = 0; i < n; i++) {
        const char *name = ibv_get_device_name(list[i]);
        if (!name)
            name = "?";
        struct ibv_context *vc = ibv_open_device(list[i]);
        if (!vc) {
            int e = errno > 0 ? errno : EIO;
            char eb[128];
            fail_errno(e, "ibv_open_device", "%s", name);
            cause_append(cause, cap, "%s: ibv_open_device: %s", name, err_text(e, eb, sizeof eb));
            continue;
        }
        int p = first_active_port(vc, name);
        if (p > 0) {
            active++;
        } else if (p == 0) {
            cause_append(cause, cap, "%s: no ACTIVE port", name);
        } else {
            char eb[128];
            cause_append(cause, cap, "%s: %s", name, err_text(-p, eb, sizeof eb));
        }
        ibv_close_device(vc);
    }
    ibv_free_device_list(list);
    if (n == 0) {
        set_err("ibv_get_device_list: no RDMA device");
        cause_append(cause, cap, "no RDMA device");
    }
    if (active > 0 && cause && cap > 0)
        cause[0] = '\0';
    return active;
}

int kvm_rdma_open(const char *dev_name, int32_t port, int32_t gid_index, uint64_t *ctx_out, int32_t *info,
                  uint8_t *gid)
{
    if (!ctx_out || port < 0 || port > 255 || gid_index < -1)
        return FAIL(KVM_RDMA_EINVAL, "kvm_rdma_open: bad argument (ctx_out %s, port %d, gid_index %d)",
                    ctx_out ? "set" : "NULL", port, gid_index);
    *ctx_out = 0;
    int by_name = dev_name && dev_name[0];
    int n = 0;
    errno = 0;
    struct ibv_device **list = ibv_get_device_list(&n);
    if (!list) {
        int e = errno > 0 ? errno : EIO;
        if (e == ENOSYS || e == ENOENT) {
            char eb[128];
            return FAIL(KVM_RDMA_ENODEV, "ibv_get_device_list failed: %s (errno %d): no RDMA device",
                        err_text(e, eb, sizeof eb), e);
        }
        return fail_errno(e, "ibv_get_device_list", "the verbs stack");
    }

    int rc = KVM_RDMA_ENODEV;
    int seen = 0;
    struct ibv_context *vc = NULL;
    uint8_t chosen_port = 0;
    struct ibv_port_attr pa;
    const char *chosen_name = NULL;

    for (int i = 0; i < n && !vc; i++) {
        const char *name = ibv_get_device_name(list[i]);
        if (!name)
            name = "?";
        if (by_name && strcmp(name, dev_name) != 0)
            continue;
        seen = 1;
        struct ibv_context *c = ibv_open_device(list[i]);
        if (!c) {
            rc = fail_errno(errno, "ibv_open_device", "%s", name);
            if (by_name)
                break;
            continue;
        }
        struct ibv_device_attr da;
        int q = ibv_query_device(c, &da);
        if (q) {
            rc = fail_errno(verbs_errno(q), "ibv_query_device", "%s", name);
            ibv_close_device(c);
            if (by_name)
                break;
            continue;
        }
        int lo = port ? port : 1, hi = port ? port : da.phys_port_cnt;
        int found = 0, query_failed = 0;
        if (port > da.phys_port_cnt) {
            rc = FAIL(KVM_RDMA_ENOPORT, "%s has no port %d (%d ports)", name, port, da.phys_port_cnt);
        } else {
            for (int p = lo; p <= hi; p++) {
                q = ibv_query_port(c, (uint8_t)p, &pa);
                if (q) {
                    rc = fail_errno(verbs_errno(q), "ibv_query_port", "%s port %d", name, p);
                    query_failed = 1;
                    break;
                }
                if (pa.state == IBV_PORT_ACTIVE) {
                    found = p;
                    break;
                }
            }
            if (!found && !query_failed) {
                if (port)
                    rc = FAIL(KVM_RDMA_ENOPORT, "%s port %d is not ACTIVE", name, port);
                else
                    rc = FAIL(KVM_RDMA_ENOPORT, "%s: no ACTIVE port", name);
            }
        }
        if (!found) {
            ibv_close_device(c);
            if (by_name)
                break;
            continue;
        }
        vc = c;
        chosen_port = (uint8_t)found;
        chosen_name = name;
    }
    if (!vc) {
        if (by_name && !seen)
            rc = FAIL(KVM_RDMA_ENODEV, "no RDMA device named %s (%d devices)", dev_name, n);
        else if (n == 0)
            rc = FAIL(KVM_RDMA_ENODEV, "no RDMA device");
        ibv_free_device_list(list);
        return rc;
    }

    struct kvm_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        ibv_close_device(vc);
        ibv_free_device_list(list);
        return FAIL(KVM_RDMA_ENOMEM, "kvm_rdma_open: out of memory");
    }
    snprintf(ctx->name, sizeof ctx->name, "%s", chosen_name);
    ibv_free_device_list(list); /* chosen_name is not used after this */
    ctx->verbs = vc;
    ctx->port = chosen_port;
    ctx->lid = pa.lid;
    ctx->active_mtu = pa.active_mtu;
    ctx->link_layer = pa.link_layer == IBV_LINK_LAYER_ETHERNET ? IBV_LINK_LAYER_ETHERNET : IBV_LINK_LAYER_INFINIBAND;

    struct ibv_device_attr da;
    int q = ibv_query_device(vc, &da);
    if (q) {
        rc = fail_errno(verbs_errno(q), "ibv_query_device", "%s", ctx->name);
        goto fail;
    }
    ctx->max_qp_rd_atom = da.max_qp_rd_atom;
    ctx->max_qp_init_rd_atom = da.max_qp_init_rd_atom;
    ctx->max_qp_wr = da.max_qp_wr;
    ctx->max_cqe = da.max_cqe;
    ctx->max_sge = da.max_sge < KVM_MAX_SGE ? da.max_sge : KVM_MAX_SGE;
    if (ctx->max_sge < 1)
        ctx->max_sge = 1;
    ctx->max_sge_rd = da.max_sge_rd < ctx->max_sge ? da.max_sge_rd : ctx->max_sge;
    if (ctx->max_sge_rd < 1)
        ctx->max_sge_rd = 1;

    union ibv_gid g;
    memset(&g, 0, sizeof g);
    if (gid_index >= 0) {
        if (pa.gid_tbl_len > 0 && gid_index >= pa.gid_tbl_len) {
            rc = FAIL(KVM_RDMA_EINVAL, "%s port %d: GID index %d out of range (table of %d)", ctx->name,
                      ctx->port, gid_index, pa.gid_tbl_len);
            goto fail;
        }
        q = ibv_query_gid(vc, ctx->port, gid_index, &g);
        if (q) {
            rc = fail_errno(verbs_errno(q), "ibv_query_gid", "%s port %d index %d", ctx->name, ctx->port, gid_index);
            goto fail;
        }
        ctx->gid_index = gid_index;
    } else {
        static const uint8_t zero[16];
        ctx->gid_index = -1;
        for (int i = 0; i < pa.gid_tbl_len; i++) {
            union ibv_gid t;
            if (ibv_query_gid(vc, ctx->port, i, &t))
                continue; /* unpopulated entries may fail; keep looking */
            if (memcmp(t.raw, zero, 16) != 0) {
                g = t;
                ctx->gid_index = i;
                break;
            }
        }
        if (ctx->gid_index < 0 && ctx->link_layer == IBV_LINK_LAYER_ETHERNET) {
            rc = FAIL(KVM_RDMA_ENOPORT, "%s port %d: Ethernet (RoCE) port without a non-zero GID", ctx->name,
                      ctx->port);
            goto fail;
        }
    }

    ctx->parent = NULL;
    ctx->pd = ibv_alloc_pd(vc);
    if (!ctx->pd) {
        rc = fail_errno(errno, "ibv_alloc_pd", "%s", ctx->name);
        goto fail;
    }
    atomic_init(&ctx->users, 0);

    if (info) {
        info[0] = ctx->port;
        info[1] = ctx->lid;
        info[2] = (int32_t)ctx->active_mtu;
        info[3] = ctx->link_layer;
        info[4] = ctx->gid_index;
        info[5] = ctx->max_qp_rd_atom;
        info[6] = ctx->max_qp_wr;
        info[7] = ctx->max_cqe;
    }
    if (gid)
        memcpy(gid, g.raw, 16);
    live_add(LIVE_CTX, 1);
    *ctx_out = handle_of(ctx);
    return KVM_RDMA_OK;

fail:
    ibv_close_device(vc);
    free(ctx);
    return rc;
}

int kvm_rdma_domain_open(uint64_t h, uint64_t *domain_out)
{
    struct kvm_ctx *ctx = ptr_of(h);
    if (!ctx || !domain_out || ctx->parent)
        return FAIL(KVM_RDMA_EINVAL, "kvm_rdma_domain_open: %s", !ctx ? "null ctx" : !domain_out ? "null out"
                                                                 : "a domain has no domains");
    struct kvm_ctx *d = malloc(sizeof *d);
    if (!d)
        return FAIL(KVM_RDMA_ENOMEM, "kvm_rdma_domain_open: out of memory");
    memcpy(d, ctx, sizeof *d);
    d->parent = ctx;
    d->pd = ibv_alloc_pd(ctx->verbs);
    if (!d->pd) {
        int rc = fail_errno(errno, "ibv_alloc_pd", "%s (domain)", ctx->name);
        free(d);
        return rc;
    }
    atomic_init(&d->users, 0);
    atomic_fetch_add(&ctx->users, 1);
    live_add(LIVE_CTX, 1);
    *domain_out = handle_of(d);
    return KVM_RDMA_OK;
}

int kvm_rdma_close(uint64_t h)
{
    struct kvm_ctx *ctx = ptr_of(h);
    if (!ctx)
        return FAIL(KVM_RDMA_EINVAL, "kvm_rdma_close: null ctx");
    int users = atomic_load(&ctx->users);
    if (users > 0)
        return fail_errno(EBUSY, "kvm_rdma_close", "%s (%d MRs/channels/domains still open)", ctx->name, users);
    if (ctx->pd) {
        int rc = ibv_dealloc_pd(ctx->pd);
        if (rc)
            return fail_errno(verbs_errno(rc), "ibv_dealloc_pd", "%s", ctx->name);
        ctx->pd = NULL;
    }
    if (ctx->parent) {
        atomic_fetch_sub(&ctx->parent->users, 1);
        free(ctx);
        live_add(LIVE_CTX, -1);
        return KVM_RDMA_OK;
    }
    int rc = ibv_close_device(ctx->verbs);
    if (rc)
        return fail_errno(verbs_errno(rc), "ibv_close_device", "%s", ctx->name);
    free(ctx);
    live_add(LIVE_CTX, -1);
    return KVM_RDMA_OK;
}

/* ---------------------------------------------------------------------------------------------------------------- */
/* memory registration */

/* CUDA driver ABI (cuda.h), declared here so that no CUDA headers or libraries are needed at build time. */
typedef int kvm_CUresult;                  /* CUresult: CUDA_SUCCESS = 0 */
typedef unsigned long long kvm_CUdeviceptr; /* CUdeviceptr (64-bit) */
#define KVM_CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD 1
typedef kvm_CUresult (*kvm_cuMemGetHandleForAddressRange_fn)(void *handle, kvm_CUdeviceptr dptr, size_t size,
                                                            int handle_type, unsigned long long flags);
typedef struct ibv_mr *(*kvm_ibv_reg_dmabuf_mr_fn)(struct ibv_pd *pd, uint64_t offset, size_t length,
                                                   uint64_t iova, int fd, int access);

static pthread_once_t dl_once = PTHREAD_ONCE_INIT;
static kvm_cuMemGetHandleForAddressRange_fn cu_get_handle;
static kvm_ibv_reg_dmabuf_mr_fn reg_dmabuf_mr;
static char dl_why[256];

static void dl_init(void)
{
    /* libibverbs is already loaded (we link it): find ibv_reg_dmabuf_mr there without requiring it at load time */
    void *verbs = dlopen("libibverbs.so.1", RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
    if (verbs) {
        reg_dmabuf_mr = (kvm_ibv_reg_dmabuf_mr_fn)dlvsym(verbs, "ibv_reg_dmabuf_mr", "IBVERBS_1.12");
        if (!reg_dmabuf_mr)
            reg_dmabuf_mr = (kvm_ibv_reg_dmabuf_mr_fn)dlsym(verbs, "ibv_reg_dmabuf_mr");
        /* keep the extra reference: the library stays loaded for the life of the process anyway */
    }
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (cuda) {
        cu_get_handle = (kvm_cuMemGetHandleForAddressRange_fn)dlsym(cuda, "cuMemGetHandleForAddressRange");
        if (!cu_get_handle)
            snprintf(dl_why, sizeof dl_why, "libcuda.so.1 has no cuMemGetHandleForAddressRange");
    } else {
        const char *e = dlerror();
        snprintf(dl_why, sizeof dl_why, "dlopen libcuda.so.1: %s", e ? e : "failed");
    }
    if (!reg_dmabuf_mr && !dl_why[0])
        snprintf(dl_why, sizeof dl_why, "libibverbs has no ibv_reg_dmabuf_mr");
}

/* Registers CUDA memory through a dma-buf; NULL (with *why filled) when that path is unavailable or fails. */
static struct ibv_mr *reg_cuda_dmabuf(struct ibv_pd *pd, uint64_t addr, uint64_t length, int access, char *why,
                                      size_t cap)
{
    pthread_once(&dl_once, dl_init);
    if (!cu_get_handle || !reg_dmabuf_mr) {
        snprintf(why, cap, "%s", dl_why[0] ? dl_why : "dma-buf path unavailable");
        return NULL;
    }
    long ps = sysconf(_SC_PAGESIZE);
    uint64_t page = ps > 0 ? (uint64_t)ps : 4096;
    uint64_t base = addr & ~(page - 1);
    uint64_t end = addr + length;
    if (end < addr || end > UINT64_MAX - page) {
        snprintf(why, cap, "range overflows");
        return NULL;
    }
    end = (end + page - 1) & ~(page - 1);
    int fd = -1;
    kvm_CUresult cr = cu_get_handle(&fd, (kvm_CUdeviceptr)base, (size_t)(end - base),
                                    KVM_CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD, 0);
    if (cr != 0 || fd < 0) {
        snprintf(why, cap, "cuMemGetHandleForAddressRange(0x%llx, %llu) returned CUresult %d",
                 (unsigned long long)base, (unsigned long long)(end - base), cr);
        return NULL;
    }
    struct ibv_mr *mr = reg_dmabuf_mr(pd, addr - base, (size_t)length, addr, fd, access);
    int e = errno;
    close(fd); /* the registration holds its own reference to the dma-buf */
    if (!mr) {
        char eb[128];
        snprintf(why, cap, "ibv_reg_dmabuf_mr: %s", err_text(e > 0 ? e : EIO, eb, sizeof eb));
    }
    return mr;
}

int kvm_rdma_reg(uint64_t h, uint64_t addr, uint64_t length, int32_t access, int32_t cuda, uint64_t *mr_out,
                 int32_t *lkey, int32_t *rkey)
{
    struct kvm_ctx *ctx = ptr_of(h);
    if (!ctx || !mr_out || length == 0 || addr + length < addr ||
        (access & ~(KVM_RDMA_LOCAL_WRITE | KVM_RDMA_REMOTE_WRITE | KVM_RDMA_REMOTE_READ)) != 0)
        return FAIL(KVM_RDMA_EINVAL, "kvm_rdma_reg: bad argument (ctx %s, addr 0x%llx, length %llu, access 0x%x)",
                    ctx ? "set" : "NULL", (unsigned long long)addr, (unsigned long long)length, (unsigned)access);
    *mr_out = 0;
    /* remote write needs local write (verbs rule); add it rather than fail */
    int acc = access & (KVM_RDMA_LOCAL_WRITE | KVM_RDMA_REMOTE_WRITE | KVM_RDMA_REMOTE_READ);
    if (acc & KVM_RDMA_REMOTE_WRITE)
        acc |= KVM_RDMA_LOCAL_WRITE;
    struct kvm_mr *m = calloc(1, sizeof *m);
    if (!m)
        return FAIL(KVM_RDMA_ENOMEM, "kvm_rdma_reg: out of memory");
    struct ibv_mr *mr = NULL;
    char why[300] = "";
    if (cuda)
        mr = reg_cuda_dmabuf(ctx->pd, addr, length, acc, why, sizeof why);
    if (!mr) {
        /* the plain function, not the macro (which may pick ibv_reg_mr_iova2 for non-constant access) */
        errno = 0;
        mr = (ibv_reg_mr)(ctx->pd, (void *)(uintptr_t)addr, (size_t)length, acc);
        if (!mr) {
            int e = errno;
            free(m);
            return fail_errno(e, "ibv_reg_mr", "%s [0x%llx, +%llu) access 0x%x%s%s%s", ctx->name,
                              (unsigned long long)addr, (unsigned long long)length, (unsigned)acc,
                              cuda ? " (CUDA; dma-buf path: " : "", cuda ? why : "", cuda ? ")" : "");
        }
    }
    m->ctx = ctx;
    m->mr = mr;
    atomic_fetch_add(&ctx->users, 1);
    live_add(LIVE_MR, 1);
    if (lkey)
        *lkey = (int32_t)mr->lkey;
    if (rkey)
        *rkey = (int32_t)mr->rkey;
    *mr_out = handle_of(m);
    return KVM_RDMA_OK;
}

int kvm_rdma_dereg(uint64_t h)
{
    struct kvm_mr *m = ptr_of(h);
    if (!m)
        return FAIL(KVM_RDMA_EINVAL, "kvm_rdma_dereg: null mr");
    uint32_t lkey = m->mr->lkey;
    int rc = ibv_dereg_mr(m->mr);
    if (rc)
        return fail_errno(verbs_errno(rc), "ibv_dereg_mr", "%s lkey 0x%x", m->ctx->name, lkey);
    atomic_fetch_sub(&m->ctx->users, 1);
    live_add(LIVE_MR, -1);
    free(m);
    return KVM_RDMA_OK;
}

/* ---------------------------------------------------------------------------------------------------------------- */
/* channels */

/* Destroys what exists of a channel; returns 0 or a negative code (then whatever failed is kept for a retry). */
static int channel_teardown(struct kvm_channel *ch)
{
    int rc = KVM_RDMA_OK;
    for (int i = 0; i < ch->nqp; i++) {
        if (!ch->qp[i])
            continue;
        int r = ibv_destroy_qp(ch->qp[i]);
        if (r) {
            if (rc == KVM_RDMA_OK)
                rc = fail_errno(verbs_errno(r), "ibv_destroy_qp", "%s QP %d (qpn %u)", ch->ctx->name, i, ch->qpn[i]);
            continue;
        }
        ch->qp[i] = NULL;
        live_add(LIVE_QP, -1);
    }
    if (rc)
        return rc;
    if (ch->cq) {
        if (ch->unacked) {
            ibv_ack_cq_events(ch->cq, ch->unacked);
            ch->unacked = 0;
        }
        int r = ibv_destroy_cq(ch->cq);
        if (r)
            return fail_errno(verbs_errno(r), "ibv_destroy_cq", "%s channel CQ", ch->ctx->name);
        ch->cq = NULL;
    }
    if (ch->cc) {
        int r = ibv_destroy_comp_channel(ch->cc);
        if (r)
            return fail_errno(verbs_errno(r), "ibv_destroy_comp_channel", "%s", ch->ctx->name);
        ch->cc = NULL;
    }
    free(ch->scratch);
    ch->scratch = NULL;
    ch->scratch_cap = 0;
    return KVM_RDMA_OK;
}

int kvm_rdma_channel_create(uint64_t h, int32_t nqp, int32_t sq_depth, int32_t rq_depth, int32_t access,
                            uint64_t *channel_out, int32_t *qpns)
{
    struct kvm_ctx *ctx = ptr_of(h);
    if (!ctx || !channel_out || !qpns || nqp < 1 || nqp > KVM_MAX_QP || sq_depth < 1 || rq_depth < 0 ||
        (access & ~(KVM_RDMA_LOCAL_WRITE | KVM_RDMA_REMOTE_WRITE | KVM_RDMA_REMOTE_READ)) != 0)
        return FAIL(KVM_RDMA_EINVAL,
                    "kvm_rdma_channel_create: bad argument (ctx %s, nqp %d, sq_depth %d, rq_depth %d, access 0x%x)",
                    ctx ? "set" : "NULL", nqp, sq_depth, rq_depth, (unsigned)access);
    *channel_out = 0;
    if (ctx->max_qp_wr > 0 && (sq_depth > ctx->max_qp_wr || rq_depth > ctx->max_qp_wr))
        return FAIL(KVM_RDMA_EINVAL, "kvm_rdma_channel_create: sq_depth %d / rq_depth %d over the device's %d",
                    sq_depth, rq_depth, ctx->max_qp_wr);
    struct kvm_channel *ch = calloc(1, sizeof *ch);
    if (!ch)
        return FAIL(KVM_RDMA_ENOMEM, "kvm_rdma_channel_create: out of memory");
    ch->ctx = ctx;
    ch->nqp = nqp;
    ch->sq_depth = sq_depth;
    ch->rq_depth = rq_depth;
    ch->state = CH_INIT;
    int rc;

    ch->cc = ibv_create_comp_channel(ctx->verbs);
    if (!ch->cc) {
        rc = fail_errno(errno, "ibv_create_comp_channel", "%s", ctx->name);
        goto fail;
    }
    int fl = fcntl(ch->cc->fd, F_GETFL);
    if (fl < 0 || fcntl(ch->cc->fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        rc = fail_errno(errno, "fcntl(O_NONBLOCK)", "%s completion channel fd %d", ctx->name, ch->cc->fd);
        goto fail;
    }
    long long cqe = (long long)nqp * ((long long)sq_depth + rq_depth);
    if (ctx->max_cqe > 0 && cqe > ctx->max_cqe)
        cqe = ctx->max_cqe;
    if (cqe > INT_MAX)
        cqe = INT_MAX;
    ch->cq = ibv_create_cq(ctx->verbs, (int)cqe, ch, ch->cc, 0);
    if (!ch->cq) {
        rc = fail_errno(errno, "ibv_create_cq", "%s (%lld entries)", ctx->name, cqe);
        goto fail;
    }
    for (int i = 0; i < nqp; i++) {
        struct ibv_qp_init_attr ia;
        memset(&ia, 0, sizeof ia);
        ia.qp_context = ch;
        ia.send_cq = ch->cq;
        ia.recv_cq = ch->cq;
        ia.cap.max_send_wr = (uint32_t)sq_depth;
        ia.cap.max_recv_wr = (uint32_t)rq_depth;
        ia.cap.max_send_sge = (uint32_t)ctx->max_sge;
        ia.cap.max_recv_sge = 1;
        ia.cap.max_inline_data = 0;
        ia.qp_type = IBV_QPT_RC;
        ia.sq_sig_all = 0;
        ch->qp[i] = ibv_create_qp(ctx->pd, &ia);
        if (!ch->qp[i]) {
            rc = fail_errno(errno, "ibv_create_qp", "%s QP %d of %d (sq %d, rq %d)", ctx->name, i, nqp, sq_depth,
                            rq_depth);
            goto fail;
        }
        live_add(LIVE_QP, 1);
        ch->qpn[i] = ch->qp[i]->qp_num;

        struct ibv_qp_attr a;
        memset(&a, 0, sizeof a);
        a.qp_state = IBV_QPS_INIT;
        a.pkey_index = 0;
        a.port_num = ctx->port;
        a.qp_access_flags = (unsigned)(access & (KVM_RDMA_REMOTE_READ | KVM_RDMA_REMOTE_WRITE));
        int r = ibv_modify_qp(ch->qp[i], &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
        if (r) {
            rc = fail_errno(verbs_errno(r), "ibv_modify_qp(INIT)", "%s QP %d (qpn %u)", ctx->name, i, ch->qpn[i]);
            goto fail;
        }
    }
    for (int i = 0; i < nqp; i++)
        qpns[i] = (int32_t)ch->qpn[i];
    atomic_fetch_add(&ctx->users, 1);
    live_add(LIVE_CHANNEL, 1);
    *channel_out = handle_of(ch);
    return KVM_RDMA_OK;

fail:
    {
        char saved[sizeof tls_err];
        memcpy(saved, tls_err, sizeof saved);
        channel_teardown(ch); /* best effort; the first failure is what the caller needs to see */
        memcpy(tls_err, saved, sizeof saved);
    }
    free(ch);
    return rc;
}

int kvm_rdma_channel_connect(uint64_t h, const int32_t *remote_qpns, const uint8_t *remote_gid, int32_t remote_lid,
                             const int32_t *remote_psns, const int32_t *local_psns, int32_t mtu, int32_t rd_atomic,
                             int32_t timeout, int32_t retry_cnt, int32_t rnr_retry)
{
    struct kvm_channel *ch = ptr_of(h);
    if (!ch || !remote_qpns || !remote_psns || !local_psns || mtu < IBV_MTU_256 || mtu > IBV_MTU_4096 ||
        rd_atomic < 0 || timeout < 0 || timeout > 31 || retry_cnt < 0 || retry_cnt > 7 || rnr_retry < 0 ||
        rnr_retry > 7 || remote_lid < 0 || remote_lid > 0xffff)
        return FAIL(KVM_RDMA_EINVAL,
                    "kvm_rdma_channel_connect: bad argument (channel %s, mtu %d, rd_atomic %d, timeout %d, "
                    "retry_cnt %d, rnr_retry %d, remote_lid %d)",
                    ch ? "set" : "NULL", mtu, rd_atomic, timeout, retry_cnt, rnr_retry, remote_lid);
    for (int i = 0; i < ch->nqp; i++) {
        if (remote_qpns[i] < 0 || remote_qpns[i] > 0xffffff || remote_psns[i] < 0 || remote_psns[i] > 0xffffff ||
            local_psns[i] < 0 || local_psns[i] > 0xffffff)
            return FAIL(KVM_RDMA_EINVAL,
                        "kvm_rdma_channel_connect: QP %d: remote qpn %d / remote psn %d / local psn %d not 24-bit", i,
                        remote_qpns[i], remote_psns[i], local_psns[i]);
    }
    if (ch->state != CH_INIT)
        return FAIL(KVM_RDMA_ESTATE, "kvm_rdma_channel_connect: channel already %s",
                    ch->state == CH_CONNECTED ? "connected" : "in error");
    struct kvm_ctx *ctx = ch->ctx;
    static const uint8_t zero[16];
    int global = ctx->link_layer == IBV_LINK_LAYER_ETHERNET || (remote_gid && memcmp(remote_gid, zero, 16) != 0);
    if (global && (!remote_gid || ctx->gid_index < 0))
        return FAIL(KVM_RDMA_EINVAL, "kvm_rdma_channel_connect: %s",
                    !remote_gid ? "a remote GID is needed on Ethernet" : "the local port has no GID (gid index -1)");

    int dest_rd = rd_atomic, init_rd = rd_atomic;
    if (ctx->max_qp_rd_atom > 0 && dest_rd > ctx->max_qp_rd_atom)
        dest_rd = ctx->max_qp_rd_atom;
    int init_limit = ctx->max_qp_init_rd_atom > 0 ? ctx->max_qp_init_rd_atom : ctx->max_qp_rd_atom;
    if (ctx->max_qp_rd_atom > 0 && init_limit > ctx->max_qp_rd_atom)
        init_limit = ctx->max_qp_rd_atom;
    if (init_limit > 0 && init_rd > init_limit)
        init_rd = init_limit;
    if (dest_rd > 255)
        dest_rd = 255;
    if (init_rd > 255)
        init_rd = 255;

    for (int i = 0; i < ch->nqp; i++) {
        struct ibv_qp_attr a;
        memset(&a, 0, sizeof a);
        a.qp_state = IBV_QPS_RTR;
        a.path_mtu = (enum ibv_mtu)mtu;
        a.dest_qp_num = (uint32_t)remote_qpns[i];
        a.rq_psn = (uint32_t)remote_psns[i];
        a.max_dest_rd_atomic = (uint8_t)dest_rd;
        a.min_rnr_timer = 12;
        a.ah_attr.port_num = ctx->port;
        a.ah_attr.sl = 0;
        a.ah_attr.src_path_bits = 0;
        a.ah_attr.static_rate = 0;
        if (global) {
            a.ah_attr.is_global = 1;
            memcpy(a.ah_attr.grh.dgid.raw, remote_gid, 16);
            a.ah_attr.grh.sgid_index = (uint8_t)ctx->gid_index;
            a.ah_attr.grh.hop_limit = 64;
            a.ah_attr.grh.traffic_class = 0;
            a.ah_attr.grh.flow_label = 0;
        }
        if (ctx->link_layer != IBV_LINK_LAYER_ETHERNET)
            a.ah_attr.dlid = (uint16_t)remote_lid;
        int r = ibv_modify_qp(ch->qp[i], &a,
                              IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                                  IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
        if (r) {
            ch->state = CH_ERROR;
            return fail_errno(verbs_errno(r), "ibv_modify_qp(RTR)", "%s QP %d (qpn %u -> remote qpn %d)", ctx->name,
                              i, ch->qpn[i], remote_qpns[i]);
        }
        memset(&a, 0, sizeof a);
        a.qp_state = IBV_QPS_RTS;
        a.sq_psn = (uint32_t)local_psns[i];
        a.timeout = (uint8_t)timeout;
        a.retry_cnt = (uint8_t)retry_cnt;
        a.rnr_retry = (uint8_t)rnr_retry;
        a.max_rd_atomic = (uint8_t)init_rd;
        r = ibv_modify_qp(ch->qp[i], &a,
                          IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
                              IBV_QP_MAX_QP_RD_ATOMIC);
        if (r) {
            ch->state = CH_ERROR;
            return fail_errno(verbs_errno(r), "ibv_modify_qp(RTS)", "%s QP %d (qpn %u)", ctx->name, i, ch->qpn[i]);
        }
    }
    ch->state = CH_CONNECTED;
    return KVM_RDMA_OK;
}

int kvm_rdma_channel_fail(uint64_t h)
{
    struct kvm_channel *ch = ptr_of(h);
    if (!ch)
        return FAIL(KVM_RDMA_EINVAL, "kvm_rdma_channel_fail: null channel");
    int rc = KVM_RDMA_OK;
    for (int i = 0; i < ch->nqp; i++) {
        struct ibv_qp_attr a;
        memset(&a, 0, sizeof a);
        a.qp_state = IBV_QPS_ERR;
        int r = ibv_modify_qp(ch->qp[i], &a, IBV_QP_STATE);
        if (r && rc == KVM_RDMA_OK)
            rc = fail_errno(verbs_errno(r), "ibv_modify_qp(ERR)", "%s QP %d (qpn %u)", ch->ctx->name, i, ch->qpn[i]);
    }
    ch->state = CH_ERROR;
    return rc;
}

int kvm_rdma_channel_destroy(uint64_t h)
{
    struct kvm_channel *ch = ptr_of(h);
    if (!ch)
        return FAIL(KVM_RDMA_EINVAL, "kvm_rdma_channel_destroy: null channel");
    int rc = channel_teardown(ch);
    if (rc)
        return rc;
    atomic_fetch_sub(&ch->ctx->users, 1);
    live_add(LIVE_CHANNEL, -1);
    free(ch);
    return KVM_RDMA_OK;
}

static int scratch_reserve(struct kvm_channel *ch, size_t bytes)
{
    if (bytes <= ch->scratch_cap)
        return 0;
    size_t cap = ch->scratch_cap ? ch->scratch_cap : 4096;
    while (cap < bytes)
        cap *= 2;
    void *p = realloc(ch->scratch, cap);
    if (!p)
        return -1;
    ch->scratch = p;
    ch->scratch_cap = cap;
    return 0;
}

/* Work requests built and posted at a time within a run (see kvm_rdma_post). */
#define KVM_POST_SLICE 128


/* kvm_rdma_post and kvm_rdma_post_keyed: rkeys, when set, gives each segment its own remote key. */
static int post_runs(uint64_t h, int32_t op, uint64_t wr_id_base, uint64_t local_base, int32_t lkey,
                     uint64_t remote_base, int32_t rkey, const int32_t *rkeys, const int64_t *local_off,
                     const int64_t *remote_off, const int64_t *len, int32_t count, int32_t imm);

int kvm_rdma_post(uint64_t h, int32_t op, uint64_t wr_id_base, uint64_t local_base, int32_t lkey,
                  uint64_t remote_base, int32_t rkey, const int64_t *local_off, const int64_t *remote_off,
                  const int64_t *len, int32_t count, int32_t imm)
{
    return post_runs(h, op, wr_id_base, local_base, lkey, remote_base, rkey, NULL, local_off, remote_off, len, count,
                     imm);
}

int kvm_rdma_post_keyed(uint64_t h, int32_t op, uint64_t wr_id_base, uint64_t local_base, int32_t lkey,
                        const int32_t *rkeys, const int64_t *local_off, const int64_t *remote_addr,
                        const int64_t *len, int32_t count, int32_t imm)
{
    if (!rkeys)
        return FAIL(KVM_RDMA_EINVAL, "kvm_rdma_post_keyed: no remote keys");
    return post_runs(h, op, wr_id_base, local_base, lkey, 0, 0, rkeys, local_off, remote_addr, len, count, imm);
}

static int post_runs(uint64_t h, int32_t op, uint64_t wr_id_base, uint64_t local_base, int32_t lkey,
                     uint64_t remote_base, int32_t rkey, const int32_t *rkeys, const int64_t *local_off,
                     const int64_t *remote_off, const int64_t *len, int32_t count, int32_t imm)
{
    int merge = (op & KVM_RDMA_POST_MERGE) != 0;
    op &= ~KVM_RDMA_POST_MERGE;
    struct kvm_channel *ch = ptr_of(h);
    if (!ch)
        return FAIL(KVM_RDMA_EINVAL, "kvm_rdma_post: null channel");
    if (op != KVM_RDMA_OP_READ && op != KVM_RDMA_OP_WRITE && op != KVM_RDMA_OP_WRITE_WITH_IMM)
        return FAIL(KVM_RDMA_EINVAL, "kvm_rdma_post: unknown op %d", op);
    if (count <= 0 || !local_off || !remote_off || !len)
        return FAIL(KVM_RDMA_EINVAL, "kvm_rdma_post: count %d (arrays %s)", count,
                    local_off && remote_off && len ? "set" : "missing");
    for (int32_t i = 0; i < count; i++) {
        int64_t lo = local_off[i], ro = remote_off[i], n = len[i];
        if (lo < 0 || ro < 0 || n < 0 || n > INT32_MAX)
            return FAIL(KVM_RDMA_EINVAL,
                        "kvm_rdma_post: segment %d: local_off %lld, remote_off %lld, len %lld out of range", i,
                        (long long)lo, (long long)ro, (long long)n);
        uint64_t lend = (uint64_t)lo + (uint64_t)n, rend = (uint64_t)ro + (uint64_t)n; /* < 2^63 + 2^31: no wrap */
        if (lend > UINT64_MAX - local_base || rend > UINT64_MAX - remote_base)
            return FAIL(KVM_RDMA_EINVAL, "kvm_rdma_post: segment %d: address overflow (local 0x%llx+%lld, remote "
                        "0x%llx+%lld, len %lld)", i, (unsigned long long)local_base, (long long)lo,
                        (unsigned long long)remote_base, (long long)ro, (long long)n);
    }
    int runs = count < ch->nqp ? count : ch->nqp;
    int per = count / runs, extra = count % runs;
    int longest = per + (extra ? 1 : 0);
    if (longest > ch->sq_depth)
        return FAIL(KVM_RDMA_EINVAL, "kvm_rdma_post: %d segments over %d QPs make runs of %d WRs, over sq_depth %d",
                    count, ch->nqp, longest, ch->sq_depth);
    if (ch->state != CH_CONNECTED)
        return FAIL(KVM_RDMA_ESTATE, "kvm_rdma_post: channel %s", ch->state == CH_INIT ? "not connected" : "in error");
    int max_sge = !merge ? 1 : op == KVM_RDMA_OP_READ ? ch->ctx->max_sge_rd : ch->ctx->max_sge;
    int slice = longest < KVM_POST_SLICE ? longest : KVM_POST_SLICE;
    if (scratch_reserve(ch, (size_t)slice * (sizeof(struct ibv_send_wr) + (size_t)max_sge * sizeof(struct ibv_sge))))
        return FAIL(KVM_RDMA_ENOMEM, "kvm_rdma_post: out of memory for %d work requests", slice);
    struct ibv_send_wr *wrs = ch->scratch;
    struct ibv_sge *sges = (struct ibv_sge *)(wrs + slice);

    enum ibv_wr_opcode plain = op == KVM_RDMA_OP_READ ? IBV_WR_RDMA_READ : IBV_WR_RDMA_WRITE;
    int32_t seg = 0;
    for (int q = 0; q < runs; q++) {
        int32_t end = seg + per + (q < extra ? 1 : 0);
        /* A run goes out as chained posts of at most KVM_POST_SLICE work requests: the same queue order, with the
         * scratch they are built in small enough to stay in cache. Segments back to back at the remote end (same
         * key) share one work request, one SGE each, up to the device's SGE limit: an import reads a chunk's
         * region of all its blocks in one READ. Only the run's last work request is signaled. */
        while (seg < end) {
            int m = 0;
            int used = 0;
            while (m < slice && seg < end) {
                struct ibv_send_wr *w = &wrs[m];
                struct ibv_sge *s0 = &sges[used];
                uint64_t raddr = remote_base + (uint64_t)remote_off[seg];
                int32_t key = rkeys ? rkeys[seg] : rkey;
                uint64_t total = 0;
                int n = 0;
                do {
                    struct ibv_sge *s = &s0[n++];
                    s->addr = local_base + (uint64_t)local_off[seg];
                    s->length = (uint32_t)len[seg];
                    s->lkey = (uint32_t)lkey;
                    total += (uint64_t)len[seg];
                    seg++;
                } while (seg < end && n < max_sge && (rkeys ? rkeys[seg] : rkey) == key
                         && remote_base + (uint64_t)remote_off[seg] == raddr + total
                         && total + (uint64_t)len[seg] <= 0x7fffffffu);
                used += n;
                w->wr_id = wr_id_base + (uint64_t)(seg - n); /* its first segment */
                w->next = NULL;
                if (m > 0)
                    wrs[m - 1].next = w;
                w->sg_list = total > 0 ? s0 : NULL;
                w->num_sge = total > 0 ? n : 0; /* zero-length RDMA: no SGE */
                w->opcode = plain;
                w->send_flags = 0;
                w->imm_data = 0;
                w->wr.rdma.remote_addr = raddr;
                w->wr.rdma.rkey = (uint32_t)key;
                m++;
            }
            if (seg == end) {
                struct ibv_send_wr *last = &wrs[m - 1];
                last->send_flags = IBV_SEND_SIGNALED;
                if (op == KVM_RDMA_OP_WRITE_WITH_IMM) {
                    last->opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
                    last->imm_data = htonl((uint32_t)imm);
                }
            }
            struct ibv_send_wr *bad = NULL;
            errno = 0;
            int r = ibv_post_send(ch->qp[q], wrs, &bad);
            if (r) {
                long bi = bad ? (long)(bad - wrs) : -1;
                if (bi < 0 || bi >= m)
                    bi = -1;
                long at = bi >= 0 ? (long)(wrs[bi].wr_id - wr_id_base) : -1L;
                return fail_errno(verbs_errno(r), "ibv_post_send",
                                  "%s QP %d (qpn %u): bad_wr %ld of a slice of %d (segment %ld; %d earlier runs of %d "
                                  "posted)", ch->ctx->name, q, ch->qpn[q], bi, m, at, q, runs);
            }
        }
    }
    return runs;
}

int kvm_rdma_post_recv(uint64_t h, uint64_t wr_id_base, int32_t count)
{
    struct kvm_channel *ch = ptr_of(h);
    if (!ch || count <= 0)
        return FAIL(KVM_RDMA_EINVAL, "kvm_rdma_post_recv: %s", ch ? "count <= 0" : "null channel");
    int longest = (count + ch->nqp - 1) / ch->nqp;
    if (ch->rq_depth == 0 || longest > ch->rq_depth)
        return FAIL(KVM_RDMA_EINVAL, "kvm_rdma_post_recv: %d receives over %d QPs exceed rq_depth %d", count, ch->nqp,
                    ch->rq_depth);
    if (ch->state == CH_ERROR)
        return FAIL(KVM_RDMA_ESTATE, "kvm_rdma_post_recv: channel in error");
    if (scratch_reserve(ch, (size_t)count * sizeof(struct ibv_recv_wr)))
        return FAIL(KVM_RDMA_ENOMEM, "kvm_rdma_post_recv: out of memory for %d work requests", count);
    struct ibv_recv_wr *wrs = ch->scratch;
    /* receive i goes to QP i % nqp, i.e. the same QPs kvm_rdma_post's runs use (run q on QP q), chained per QP */
    int qps = count < ch->nqp ? count : ch->nqp;
    for (int32_t i = 0; i < count; i++) {
        wrs[i].wr_id = wr_id_base + (uint64_t)i;
        wrs[i].next = i + qps < count ? &wrs[i + qps] : NULL;
        wrs[i].sg_list = NULL;
        wrs[i].num_sge = 0;
    }
    for (int q = 0; q < qps; q++) {
        struct ibv_recv_wr *bad = NULL;
        errno = 0;
        int r = ibv_post_recv(ch->qp[q], &wrs[q], &bad);
        if (r) {
            long bi = bad ? (long)(bad - wrs) : -1;
            return fail_errno(verbs_errno(r), "ibv_post_recv", "%s QP %d (qpn %u): bad_wr receive %ld", ch->ctx->name,
                              q, ch->qpn[q], bi);
        }
    }
    return KVM_RDMA_OK;
}

/* ---------------------------------------------------------------------------------------------------------------- */
/* completions */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int qp_index_of(const struct kvm_channel *ch, uint32_t qpn)
{
    for (int i = 0; i < ch->nqp; i++)
        if (ch->qpn[i] == qpn)
            return i;
    return -1;
}

/* Polls up to max completions into the output arrays; the count, or a negative code. */
static int drain(struct kvm_channel *ch, int32_t max, int64_t *wr_ids, int32_t *status, int32_t *opcode,
                 int32_t *byte_len, int32_t *imm, int32_t *qp_index)
{
    struct ibv_wc wc[KVM_POLL_CHUNK];
    int got = 0;
    while (got < max) {
        int want = max - got < KVM_POLL_CHUNK ? max - got : KVM_POLL_CHUNK;
        int n = ibv_poll_cq(ch->cq, want, wc);
        if (n < 0) {
            if (got)
                return got; /* report what we have; the failure repeats on the next call */
            return fail_errno(n < -1 ? -n : (errno > 0 ? errno : EIO), "ibv_poll_cq", "%s channel CQ", ch->ctx->name);
        }
        for (int k = 0; k < n; k++, got++) {
            wr_ids[got] = (int64_t)wc[k].wr_id;
            status[got] = (int32_t)wc[k].status;
            opcode[got] = (int32_t)wc[k].opcode;
            byte_len[got] = (int32_t)wc[k].byte_len;
            imm[got] = (wc[k].wc_flags & IBV_WC_WITH_IMM) ? (int32_t)ntohl(wc[k].imm_data) : 0;
            qp_index[got] = qp_index_of(ch, wc[k].qp_num);
        }
        if (n < want)
            break;
    }
    return got;
}

int kvm_rdma_poll(uint64_t h, int32_t max, int32_t timeout_ms, int64_t *wr_ids, int32_t *status, int32_t *opcode,
                  int32_t *byte_len, int32_t *imm, int32_t *qp_index)
{
    struct kvm_channel *ch = ptr_of(h);
    if (!ch || max <= 0 || !wr_ids || !status || !opcode || !byte_len || !imm || !qp_index)
        return FAIL(KVM_RDMA_EINVAL, "kvm_rdma_poll: bad argument (channel %s, max %d)", ch ? "set" : "NULL", max);
    int n = drain(ch, max, wr_ids, status, opcode, byte_len, imm, qp_index);
    if (n != 0)
        return n;
    if (timeout_ms <= 0)
        return KVM_RDMA_ETIMEDOUT;
    int64_t deadline = now_ns() + (int64_t)timeout_ms * 1000000LL;
    for (;;) {
        if (!ch->armed) {
            int r = ibv_req_notify_cq(ch->cq, 0);
            if (r)
                return fail_errno(verbs_errno(r), "ibv_req_notify_cq", "%s channel CQ", ch->ctx->name);
            ch->armed = 1;
            /* a completion may have arrived between the poll and the request: poll again */
            n = drain(ch, max, wr_ids, status, opcode, byte_len, imm, qp_index);
            if (n != 0)
                return n;
        }
        int64_t left = deadline - now_ns();
        if (left <= 0)
            return KVM_RDMA_ETIMEDOUT;
        int ms = (int)((left + 999999) / 1000000); /* round up: never spin with a zero timeout */
        struct pollfd pfd = {.fd = ch->cc->fd, .events = POLLIN, .revents = 0};
        int pr = poll(&pfd, 1, ms);
        if (pr < 0) {
            if (errno == EINTR)
                continue;
            return fail_errno(errno, "poll", "%s completion channel fd %d", ch->ctx->name, ch->cc->fd);
        }
        if (pr > 0 && (pfd.revents & (POLLERR | POLLHUP | POLLNVAL)))
            return fail_errno(EIO, "poll", "%s completion channel fd %d (revents 0x%x)", ch->ctx->name, ch->cc->fd,
                              (unsigned)pfd.revents);
        if (pr > 0) {
            struct ibv_cq *ev_cq;
            void *ev_ctx;
            while (ibv_get_cq_event(ch->cc, &ev_cq, &ev_ctx) == 0) {
                ch->armed = 0;
                if (++ch->unacked >= KVM_ACK_BATCH) {
                    ibv_ack_cq_events(ch->cq, ch->unacked);
                    ch->unacked = 0;
                }
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                return fail_errno(errno, "ibv_get_cq_event", "%s completion channel fd %d", ch->ctx->name,
                                  ch->cc->fd);
        }
        n = drain(ch, max, wr_ids, status, opcode, byte_len, imm, qp_index);
        if (n != 0)
            return n;
    }
}
