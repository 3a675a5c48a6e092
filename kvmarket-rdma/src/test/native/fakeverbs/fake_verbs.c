/*
 * fake_verbs.c - a TEST-ONLY fake RDMA verbs provider: our own libibverbs.so.1, loaded INSTEAD of rdma-core's
 * library through LD_LIBRARY_PATH, so that kvm_rdma.c (linked with -libverbs against the real headers) runs end to
 * end on machines without an RDMA NIC, between processes and network namespaces. Reliable-connection (RC)
 * semantics are carried over TCP.
 *
 * It is compiled against the REAL <infiniband/verbs.h>: the struct layouts are the real ones, and the inline
 * functions of verbs.h work unchanged: ibv_post_send / ibv_post_recv / ibv_poll_cq / ibv_req_notify_cq call
 * context->ops.*; context->abi_compat stays NULL (not an extended verbs_context), so the ibv_query_port macro
 * falls back to the exported legacy ibv_query_port and the ibv_reg_mr macro to the exported ibv_reg_mr or
 * ibv_reg_mr_iova2. Symbols carry the real library's versions (libibverbs.map).
 *
 * DEVICE: one device "kvmfake0", one port (1): ACTIVE, link layer Ethernet, active_mtu 4096, lid 0, gid_tbl_len 1;
 * max_qp_rd_atom 16, max_qp_wr 16384, max_cqe 1<<20, max_sge 1.
 *
 * ADDRESSING: each process runs ONE TCP listener (0.0.0.0, ephemeral port) while at least one context is open.
 * GID index 0 of port 1 says where it is reached:
 *     bytes 0..7   zero
 *     bytes 8..9   the listener's TCP port, big-endian
 *     bytes 10..11 0xff 0xff
 *     bytes 12..15 the IPv4 address: $KVM_FAKE_VERBS_IP, else the first UP non-loopback IPv4 interface address,
 *                  else 127.0.0.1
 * (an IPv4-mapped RoCE v2 GID with the port in otherwise-zero bytes). A QP moved to RTR with ah_attr.is_global = 1
 * and that GID as grh.dgid sends its requests to ip:port, over one TCP connection per requester QP (TCP_NODELAY).
 *
 * ENVIRONMENT (read when the call named runs):
 *   KVM_FAKE_VERBS_DEVICES=0            ibv_get_device_list: empty list (count 0, non-NULL).
 *   KVM_FAKE_VERBS_PORT_STATE=down      ibv_query_port: state IBV_PORT_DOWN (phys_state 3, disabled).
 *   KVM_FAKE_VERBS_IP=a.b.c.d           ibv_open_device (first context): the IPv4 put in the GID.
 *   KVM_FAKE_VERBS_DELAY_US=n           ibv_open_device: the context's QPs sleep n us before each requester WR.
 *   KVM_FAKE_VERBS_QP_ERROR_AFTER_BYTES=n  ibv_open_device: once a requester QP of the context has moved n bytes
 *                                       (successful WRs, total), its next WR completes IBV_WC_GENERAL_ERR and the
 *                                       QP moves to ERR. Unset or empty: off (0 = the first WR fails).
 *   KVM_FAKE_VERBS_DEBUG=1              trace wire errors on stderr.
 *
 * WIRE (little-endian, both ends are this file): struct wire_hdr below. Requester -> responder:
 *   READ   header (op, src qpn, dst qpn, raddr, rkey, len)
 *   WRITE / WRITE_IMM  header (+ imm) then exactly len payload bytes
 * responder -> requester: a RESP header with a status (OK, ACCESS NAK, RNR NAK, NO_QP); for an OK READ it is followed
 * by chunks {u32 n, u32 status} + n bytes until len bytes went (a chunk with status != 0 ends it early: the MR
 * was deregistered mid-transfer). One request at a time per QP, in order (max_rd_atomic is remembered, not used).
 *
 * BEHAVIOUR CHOICES:
 *   - No such QP at the responder (unknown number, not RTR/RTS, or connected to another QP): the responder answers
 *     NO_QP right away (after draining a WRITE payload) and the requester completes the WR with
 *     IBV_WC_RETRY_EXC_ERR IMMEDIATELY (a real responder drops silently and the requester sees the same status
 *     only after its transport timeout; the fake saves the wait).
 *   - Transport timeout: no progress on the socket (connect, send, response) for
 *     4.096 us * 2^timeout * (retry_cnt + 1), clamped to [5 ms, 30 s] (timeout 0 = 30 s) -> IBV_WC_RETRY_EXC_ERR.
 *     Connection refused / reset / EOF -> IBV_WC_RETRY_EXC_ERR at once.
 *   - RNR: the responder NAKs a WRITE_WITH_IMM when its receive queue is empty (the payload is drained, not
 *     written); the requester retries after the responder's min_rnr_timer (IB encoding, clamped to [1, 100] ms),
 *     rnr_retry times (7 = forever), then IBV_WC_RNR_RETRY_EXC_ERR.
 *   - CQ overflow (a completion when cqe entries are unpolled): the completion is lost, the CQ is marked
 *     overflowed, the QP adding it moves to ERR, and every other QP using that CQ moves to ERR at its next send
 *     WR or incoming request (a real CQ overrun is a fatal async CQ error that errors its QPs).
 *   - Send queue slots: as on real hardware, a send WR's slot is freed only when its completion, or a later
 *     signaled completion of the same QP, is POLLED (an unsignaled run must end with a signaled WR).
 *   - ibv_destroy_qp removes the QP's unpolled completions from its CQs (as mlx5 does).
 *   - ibv_destroy_cq waits until every event taken by ibv_get_cq_event was acknowledged (man ibv_get_cq_event);
 *     it prints a warning on stderr when that wait exceeds 2 s.
 *   - The responder never touches memory outside a live MR: each chunk (<= 1 MiB) is copied through a bounce
 *     buffer while the MR is pinned by a busy count; ibv_dereg_mr unlinks the MR and waits for copies in progress.
 *   - Requester-side local memory is read/written by the socket syscalls directly (EFAULT -> IBV_WC_LOC_PROT_ERR).
 *   - fork() while a context is open is not supported (the child has no fake threads); open contexts after fork.
 *   - ibv_close_device returns -1 with errno EBUSY while PDs, CQs or completion channels of it exist (man
 *     ibv_open_device: -1 on failure); ibv_dealloc_pd / ibv_destroy_cq / ibv_destroy_comp_channel return EBUSY.
 *   - QP state machine (man ibv_modify_qp, RC table): RESET->INIT, INIT->RTR, RTR->RTS with their required masks
 *     (plus the optional bits the IB spec allows: INIT->RTR ALT_PATH|ACCESS_FLAGS|PKEY_INDEX, RTR->RTS
 *     ALT_PATH|ACCESS_FLAGS|MIN_RNR_TIMER|PATH_MIG_STATE, CUR_STATE anywhere); any state -> ERR or RESET with
 *     IBV_QP_STATE only. Anything else, or an invalid value (port != 1, pkey_index != 0, non-global AV,
 *     sgid_index != 0, rd_atomic > 16, ...), is EINVAL and changes nothing. RESET drops all work silently.
 *
 * NOT IMPLEMENTED: SEND/RECV and atomic opcodes (post_send EINVAL), SRQ, UD/UC QPs, inline data, more than one SGE
 * (device max_sge 1), async events, memory windows, extended verbs (ibv_*_ex inlines see a legacy context),
 * pipelined READs (one request per QP in flight; max_rd_atomic is only remembered), PSNs and path MTU (TCP is
 * the wire), solicited events (a solicited_only arm fires on error completions only), responder-side QP errors
 * (a NAKing responder QP keeps its state), zero-length WRITEs still validate the rkey.
 */
#define _GNU_SOURCE
#include <infiniband/verbs.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#undef ibv_reg_mr
#undef ibv_query_port
#undef ibv_reg_mr_iova

#define EXPORT __attribute__((visibility("default")))

/* ------------------------------------------------------------------------------------------------------------ */
/* device limits                                                                                               */

#define FAKE_DEV_NAME "kvmfake0"
#define FAKE_MAX_QP_WR 16384
#define FAKE_MAX_CQE (1 << 20)
#define FAKE_MAX_SGE 16
#define FAKE_MAX_RD_ATOM 16
#define FAKE_MAX_MSG (1u << 31)
#define CHUNK (1u << 20)

/* ------------------------------------------------------------------------------------------------------------ */
/* objects                                                                                                     */

struct fctx {
    struct ibv_context c;
    int npd, ncq, nchan; /* g_lock */
    unsigned delay_us;
    int err_after_on;
    uint64_t err_after;
};

struct fpd {
    struct ibv_pd pd;
    int nmr, nqp; /* g_lock */
};

struct fmr {
    struct ibv_mr mr;
    char *host;    /* host address of iova */
    uint64_t iova; /* first address as seen through lkey/rkey */
    uint64_t len;
    int access;
    int busy; /* g_lock: responder copies in progress */
    struct fmr *next;
};

struct fchan {
    struct ibv_comp_channel ch;
    int wfd;
    int ncq; /* g_lock */
};

struct fqp;

struct cqe {
    struct ibv_wc wc;
    struct fqp *qp;   /* requester completions: frees send slots up to sq_mark when polled */
    uint64_t sq_mark; /* index + 1 of the send WR, 0 = none */
};

struct fcq {
    struct ibv_cq cq;
    pthread_mutex_t lock;
    struct cqe *ring;
    uint32_t alloc, head, count, max;
    int armed, armed_sol, overflow;
    uint64_t id;
    int nqp;              /* g_lock */
    unsigned events_got;  /* cq.mutex */
    struct fchan *chan;
    struct fcq *next;     /* g_lock: all CQs (for event id lookup) */
};

struct swr {
    uint64_t wr_id;
    enum ibv_wr_opcode opcode;
    unsigned flags;
    uint32_t imm; /* __be32 as given */
    uint64_t raddr;
    uint32_t rkey;
    int nsge;
    struct ibv_sge sge[FAKE_MAX_SGE];
};

struct fqp {
    struct ibv_qp qp;
    struct fctx *fc;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    enum ibv_qp_state state; /* lock; mirrored into qp.state */
    /* attributes */
    uint16_t pkey_index;
    uint8_t port_num, timeout, retry_cnt, rnr_retry, max_rd_atomic, max_dest_rd_atomic, min_rnr_timer;
    enum ibv_mtu path_mtu;
    uint32_t dest_qp_num, rq_psn, sq_psn;
    unsigned access_flags;
    struct ibv_ah_attr ah;
    /* queues */
    uint32_t max_send_wr, max_recv_wr, max_send_sge, max_recv_sge;
    int sq_sig_all;
    struct swr *sq;
    uint64_t sq_head, sq_exec; /* lock */
    uint64_t sq_tail;          /* atomic: slots below are free */
    uint64_t *rq;              /* wr_ids */
    uint64_t rq_head, rq_tail; /* lock: posted receives are [rq_tail, rq_head) */
    /* worker */
    pthread_t worker;
    int stop;
    int wakefd;
    uint64_t epoch; /* lock: bumped by RESET (drop without completions) */
    uint64_t bytes_moved;
    int sock;            /* worker only */
    uint64_t sock_epoch; /* worker only */
    struct fqp *next;    /* g_lock: all QPs */
};

/* ------------------------------------------------------------------------------------------------------------ */
/* process state                                                                                               */

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t g_life = PTHREAD_MUTEX_INITIALIZER; /* serializes open/close of contexts (listener life) */
static int g_nctx;
static struct fmr *g_mrs;
static struct fqp *g_qps;
static struct fcq *g_cqs;
static uint64_t g_cq_ids;
static uint32_t g_next_qpn;
static uint64_t g_rng;

struct conn {
    int fd;
    pthread_t th;
    int done; /* g_lock */
    struct conn *next;
};

static int g_listen_fd = -1;
static int g_listen_stop = -1;
static uint16_t g_listen_port;
static uint32_t g_ip; /* network order */
static pthread_t g_listener;
static struct conn *g_conns; /* g_lock */
static int g_debug;

static struct ibv_device g_dev = {
    .node_type = IBV_NODE_CA,
    .transport_type = IBV_TRANSPORT_IB,
    .name = FAKE_DEV_NAME,
    .dev_name = "uverbs0",
    .dev_path = "/sys/class/infiniband_verbs/uverbs0",
    .ibdev_path = "/sys/class/infiniband/" FAKE_DEV_NAME,
};

static void dbg(const char *fmt, ...)
{
    if (!g_debug)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[fake_verbs %d] ", (int)getpid());
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* g_lock held */
static uint32_t rng32(void)
{
    if (g_rng == 0)
        g_rng = (now_us() * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)getpid() << 32) ^ (uintptr_t)&g_rng;
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}

static int env_u64(const char *name, uint64_t *out)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return 0;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end)
        return 0;
    *out = x;
    return 1;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* device list, names, strings                                                                                 */

EXPORT struct ibv_device **ibv_get_device_list(int *num_devices)
{
    const char *v = getenv("KVM_FAKE_VERBS_DEVICES");
    int n = (v && strcmp(v, "0") == 0) ? 0 : 1;
    struct ibv_device **list = calloc(2, sizeof(*list));
    if (!list) {
        errno = ENOMEM;
        return NULL;
    }
    if (n)
        list[0] = &g_dev;
    if (num_devices)
        *num_devices = n;
    return list;
}

EXPORT void ibv_free_device_list(struct ibv_device **list)
{
    free(list);
}

EXPORT const char *ibv_get_device_name(struct ibv_device *device)
{
    return device ? device->name : NULL;
}

EXPORT __be64 ibv_get_device_guid(struct ibv_device *device)
{
    (void)device;
    return htobe64(0x02c0ffeefeed0001ull);
}

EXPORT int ibv_fork_init(void)
{
    return 0;
}

EXPORT const char *ibv_node_type_str(enum ibv_node_type node_type)
{
    static const char *const s[] = {"CA", "switch", "router", "iWARP NIC", "usNIC", "usNIC UDP", "unspecified"};
    if (node_type < IBV_NODE_CA || node_type > IBV_NODE_UNSPECIFIED)
        return "unknown";
    return s[node_type - 1];
}

EXPORT const char *ibv_port_state_str(enum ibv_port_state port_state)
{
    static const char *const s[] = {"no state change (NOP)", "down", "init", "armed", "active", "active deferred"};
    if (port_state < IBV_PORT_NOP || port_state > IBV_PORT_ACTIVE_DEFER)
        return "unknown";
    return s[port_state];
}

EXPORT const char *ibv_event_type_str(enum ibv_event_type event)
{
    (void)event;
    return "unknown";
}

EXPORT const char *ibv_wc_status_str(enum ibv_wc_status status)
{
    static const char *const s[] = {
        [IBV_WC_SUCCESS] = "success",
        [IBV_WC_LOC_LEN_ERR] = "local length error",
        [IBV_WC_LOC_QP_OP_ERR] = "local QP operation error",
        [IBV_WC_LOC_EEC_OP_ERR] = "local EE context operation error",
        [IBV_WC_LOC_PROT_ERR] = "local protection error",
        [IBV_WC_WR_FLUSH_ERR] = "Work Request Flushed Error",
        [IBV_WC_MW_BIND_ERR] = "memory management operation error",
        [IBV_WC_BAD_RESP_ERR] = "bad response error",
        [IBV_WC_LOC_ACCESS_ERR] = "local access error",
        [IBV_WC_REM_INV_REQ_ERR] = "remote invalid request error",
        [IBV_WC_REM_ACCESS_ERR] = "remote access error",
        [IBV_WC_REM_OP_ERR] = "remote operation error",
        [IBV_WC_RETRY_EXC_ERR] = "transport retry counter exceeded",
        [IBV_WC_RNR_RETRY_EXC_ERR] = "RNR retry counter exceeded",
        [IBV_WC_LOC_RDD_VIOL_ERR] = "local RDD violation error",
        [IBV_WC_REM_INV_RD_REQ_ERR] = "remote invalid RD request",
        [IBV_WC_REM_ABORT_ERR] = "aborted error",
        [IBV_WC_INV_EECN_ERR] = "invalid EE context number",
        [IBV_WC_INV_EEC_STATE_ERR] = "invalid EE context state",
        [IBV_WC_FATAL_ERR] = "fatal error",
        [IBV_WC_RESP_TIMEOUT_ERR] = "response timeout error",
        [IBV_WC_GENERAL_ERR] = "general error",
        [IBV_WC_TM_ERR] = "TM error",
        [IBV_WC_TM_RNDV_INCOMPLETE] = "TM software rendezvous",
    };
    if ((int)status < IBV_WC_SUCCESS || status > IBV_WC_TM_RNDV_INCOMPLETE)
        return "unknown";
    return s[status];
}

/* ------------------------------------------------------------------------------------------------------------ */
/* listener and responder                                                                                      */

enum { OP_READ = 1, OP_WRITE = 2, OP_WRITE_IMM = 3, OP_RESP = 4 };
enum { ST_OK = 0, ST_ACCESS = 1, ST_RNR = 2, ST_NOQP = 3 };
#define WIRE_MAGIC 0x4b564d46u /* "KVMF" */

struct wire_hdr {
    uint32_t magic;
    uint8_t op;
    uint8_t status;
    uint8_t rnr_timer; /* RNR NAK: the responder's min_rnr_timer */
    uint8_t pad;
    uint32_t src_qpn;
    uint32_t dst_qpn;
    uint32_t imm; /* __be32, unchanged */
    uint32_t rkey;
    uint64_t raddr;
    uint64_t len;
};

struct chunk_hdr {
    uint32_t n;
    uint32_t status;
};

static int rd_full(int fd, void *buf, size_t len)
{
    char *p = buf;
    while (len) {
        ssize_t r = recv(fd, p, len, 0);
        if (r == 0)
            return -1;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

static int wr_full(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t r = send(fd, p, len, MSG_NOSIGNAL);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

/* g_lock held */
static struct fqp *qp_by_num(uint32_t qpn)
{
    for (struct fqp *q = g_qps; q; q = q->next)
        if (q->qp.qp_num == qpn)
            return q;
    return NULL;
}

/* g_lock held: the live MR with that rkey in pd granting access over [addr, addr+len), or NULL */
static struct fmr *mr_remote(uint32_t rkey, struct ibv_pd *pd, int access, uint64_t addr, uint64_t len)
{
    for (struct fmr *m = g_mrs; m; m = m->next) {
        if (m->mr.rkey != rkey)
            continue;
        if (m->mr.pd != pd || (m->access & access) != access)
            return NULL;
        if (addr < m->iova || len > m->len || addr - m->iova > m->len - len)
            return NULL;
        return m;
    }
    return NULL;
}

static void qp_set_err_locked(struct fqp *q);

static pthread_cond_t g_mr_cond = PTHREAD_COND_INITIALIZER;

static void mr_unbusy(struct fmr *m)
{
    pthread_mutex_lock(&g_lock);
    if (--m->busy == 0)
        pthread_cond_broadcast(&g_mr_cond); /* ibv_dereg_mr may wait for it */
    pthread_mutex_unlock(&g_lock);
}

/* Responder validation (man ibv_modify_qp: only RTR/RTS QPs receive). g_lock held. */
static struct fqp *resp_qp(const struct wire_hdr *h)
{
    struct fqp *q = qp_by_num(h->dst_qpn);
    if (!q)
        return NULL;
    pthread_mutex_lock(&q->lock);
    struct fcq *rcq = (struct fcq *)q->qp.recv_cq, *scq = (struct fcq *)q->qp.send_cq;
    if ((q->state == IBV_QPS_RTR || q->state == IBV_QPS_RTS) &&
        (__atomic_load_n(&rcq->overflow, __ATOMIC_RELAXED) || __atomic_load_n(&scq->overflow, __ATOMIC_RELAXED)))
        qp_set_err_locked(q);
    int ok = (q->state == IBV_QPS_RTR || q->state == IBV_QPS_RTS) && q->dest_qp_num == h->src_qpn;
    pthread_mutex_unlock(&q->lock);
    return ok ? q : NULL;
}

static int cq_push(struct fcq *cq, const struct ibv_wc *wc, struct fqp *qp, uint64_t mark);

static void serve_write(int fd, struct wire_hdr *h, char *bounce)
{
    int status = ST_OK;
    struct ibv_pd *pd = NULL;
    uint8_t rnr_timer = 0;
    pthread_mutex_lock(&g_lock);
    struct fqp *q = resp_qp(h);
    if (!q) {
        status = ST_NOQP;
    } else {
        pd = q->qp.pd;
        rnr_timer = q->min_rnr_timer;
        if (!(q->access_flags & IBV_ACCESS_REMOTE_WRITE) || h->len > FAKE_MAX_MSG ||
            !mr_remote(h->rkey, pd, IBV_ACCESS_REMOTE_WRITE, h->raddr, h->len))
            status = ST_ACCESS;
        else if (h->op == OP_WRITE_IMM) {
            pthread_mutex_lock(&q->lock);
            if (q->rq_head == q->rq_tail)
                status = ST_RNR;
            pthread_mutex_unlock(&q->lock);
        }
    }
    pthread_mutex_unlock(&g_lock);

    uint64_t off = 0;
    while (off < h->len) {
        uint64_t n = h->len - off < CHUNK ? h->len - off : CHUNK;
        if (rd_full(fd, bounce, n))
            return; /* requester gone mid-frame: drop */
        if (status == ST_OK) {
            pthread_mutex_lock(&g_lock);
            struct fmr *m = mr_remote(h->rkey, pd, IBV_ACCESS_REMOTE_WRITE, h->raddr, h->len);
            if (m)
                m->busy++;
            pthread_mutex_unlock(&g_lock);
            if (!m) {
                status = ST_ACCESS; /* deregistered mid-transfer */
            } else {
                memcpy(m->host + (h->raddr - m->iova) + off, bounce, n);
                mr_unbusy(m);
            }
        }
        off += n;
    }
    if (status == ST_OK && h->op == OP_WRITE_IMM) {
        pthread_mutex_lock(&g_lock);
        q = resp_qp(h);
        if (!q) {
            status = ST_NOQP;
        } else {
            pthread_mutex_lock(&q->lock);
            if (q->rq_head == q->rq_tail) {
                status = ST_RNR;
            } else {
                struct ibv_wc wc;
                memset(&wc, 0, sizeof(wc));
                wc.wr_id = q->rq[q->rq_tail % q->max_recv_wr];
                q->rq_tail++;
                wc.status = IBV_WC_SUCCESS;
                wc.opcode = IBV_WC_RECV_RDMA_WITH_IMM;
                wc.byte_len = (uint32_t)h->len;
                wc.imm_data = h->imm;
                wc.qp_num = q->qp.qp_num;
                wc.src_qp = h->src_qpn;
                wc.wc_flags = IBV_WC_WITH_IMM;
                if (cq_push((struct fcq *)q->qp.recv_cq, &wc, NULL, 0))
                    qp_set_err_locked(q);
            }
            pthread_mutex_unlock(&q->lock);
        }
        pthread_mutex_unlock(&g_lock);
    }
    struct wire_hdr r;
    memset(&r, 0, sizeof(r));
    r.magic = WIRE_MAGIC;
    r.op = OP_RESP;
    r.status = (uint8_t)status;
    r.rnr_timer = rnr_timer;
    r.src_qpn = h->dst_qpn;
    r.dst_qpn = h->src_qpn;
    r.len = h->len;
    (void)wr_full(fd, &r, sizeof(r));
}

static void serve_read(int fd, struct wire_hdr *h, char *bounce)
{
    int status = ST_OK;
    struct ibv_pd *pd = NULL;
    pthread_mutex_lock(&g_lock);
    struct fqp *q = resp_qp(h);
    if (!q) {
        status = ST_NOQP;
    } else {
        pd = q->qp.pd;
        if (!(q->access_flags & IBV_ACCESS_REMOTE_READ) || h->len > FAKE_MAX_MSG ||
            !mr_remote(h->rkey, pd, IBV_ACCESS_REMOTE_READ, h->raddr, h->len))
            status = ST_ACCESS;
    }
    pthread_mutex_unlock(&g_lock);
    struct wire_hdr r;
    memset(&r, 0, sizeof(r));
    r.magic = WIRE_MAGIC;
    r.op = OP_RESP;
    r.status = (uint8_t)status;
    r.src_qpn = h->dst_qpn;
    r.dst_qpn = h->src_qpn;
    r.len = h->len;
    if (wr_full(fd, &r, sizeof(r)) || status != ST_OK)
        return;
    uint64_t off = 0;
    while (off < h->len) {
        uint64_t n = h->len - off < CHUNK ? h->len - off : CHUNK;
        struct chunk_hdr *c = (struct chunk_hdr *)bounce;
        pthread_mutex_lock(&g_lock);
        struct fmr *m = mr_remote(h->rkey, pd, IBV_ACCESS_REMOTE_READ, h->raddr, h->len);
        if (m)
            m->busy++;
        pthread_mutex_unlock(&g_lock);
        if (!m) {
            c->n = 0;
            c->status = ST_ACCESS;
            (void)wr_full(fd, c, sizeof(*c));
            return;
        }
        memcpy(bounce + sizeof(*c), m->host + (h->raddr - m->iova) + off, n);
        mr_unbusy(m);
        c->n = (uint32_t)n;
        c->status = ST_OK;
        if (wr_full(fd, bounce, sizeof(*c) + n))
            return;
        off += n;
    }
}

static void *conn_main(void *arg)
{
    struct conn *c = arg;
    char *bounce = malloc(CHUNK + sizeof(struct chunk_hdr));
    struct wire_hdr h;
    while (bounce && rd_full(c->fd, &h, sizeof(h)) == 0) {
        if (h.magic != WIRE_MAGIC) {
            dbg("bad frame magic, dropping connection");
            break;
        }
        if (h.op == OP_READ)
            serve_read(c->fd, &h, bounce);
        else if (h.op == OP_WRITE || h.op == OP_WRITE_IMM)
            serve_write(c->fd, &h, bounce);
        else
            break;
    }
    free(bounce);
    pthread_mutex_lock(&g_lock);
    c->done = 1;
    pthread_mutex_unlock(&g_lock);
    return NULL;
}

/* joins finished connection threads (all = 1: shut down and join every one). Not under g_lock. */
static void reap_conns(int all)
{
    for (;;) {
        struct conn *victim = NULL;
        pthread_mutex_lock(&g_lock);
        for (struct conn **pp = &g_conns; *pp; pp = &(*pp)->next) {
            if ((*pp)->done || all) {
                victim = *pp;
                *pp = victim->next;
                break;
            }
        }
        pthread_mutex_unlock(&g_lock);
        if (!victim)
            return;
        shutdown(victim->fd, SHUT_RDWR);
        pthread_join(victim->th, NULL);
        close(victim->fd);
        free(victim);
    }
}

static void *listener_main(void *arg)
{
    (void)arg;
    for (;;) {
        struct pollfd p[2] = {{g_listen_fd, POLLIN, 0}, {g_listen_stop, POLLIN, 0}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p[1].revents)
            break;
        int fd = accept4(g_listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        reap_conns(0);
        struct conn *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        if (pthread_create(&c->th, NULL, conn_main, c)) {
            close(fd);
            free(c);
            continue;
        }
        pthread_mutex_lock(&g_lock);
        c->next = g_conns;
        g_conns = c;
        pthread_mutex_unlock(&g_lock);
    }
    return NULL;
}

static uint32_t pick_ip(void)
{
    const char *v = getenv("KVM_FAKE_VERBS_IP");
    struct in_addr a;
    if (v && *v && inet_pton(AF_INET, v, &a) == 1)
        return a.s_addr;
    struct ifaddrs *ifs = NULL, *i;
    uint32_t ip = htonl(INADDR_LOOPBACK);
    if (getifaddrs(&ifs) == 0) {
        for (i = ifs; i; i = i->ifa_next) {
            if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET)
                continue;
            if (!(i->ifa_flags & IFF_UP) || (i->ifa_flags & IFF_LOOPBACK))
                continue;
            ip = ((struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr;
            break;
        }
        freeifaddrs(ifs);
    }
    return ip;
}

/* g_life held */
static int listener_start(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return errno;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_ANY);
    socklen_t sl = sizeof(sa);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 1024) ||
        getsockname(fd, (struct sockaddr *)&sa, &sl)) {
        int e = errno;
        close(fd);
        return e;
    }
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0) {
        int e = errno;
        close(fd);
        return e;
    }
    g_listen_fd = fd;
    g_listen_stop = efd;
    g_listen_port = ntohs(sa.sin_port);
    g_ip = pick_ip();
    g_debug = getenv("KVM_FAKE_VERBS_DEBUG") && strcmp(getenv("KVM_FAKE_VERBS_DEBUG"), "0") != 0;
    int e = pthread_create(&g_listener, NULL, listener_main, NULL);
    if (e) {
        close(fd);
        close(efd);
        g_listen_fd = g_listen_stop = -1;
        return e;
    }
    return 0;
}

/* g_life held */
static void listener_stop(void)
{
    uint64_t one = 1;
    if (write(g_listen_stop, &one, sizeof(one)) < 0) {
        /* cannot happen for a fresh eventfd */
    }
    pthread_join(g_listener, NULL);
    reap_conns(1);
    close(g_listen_fd);
    close(g_listen_stop);
    g_listen_fd = g_listen_stop = -1;
    g_listen_port = 0;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* context, device, port                                                                                       */

static int fake_poll_cq(struct ibv_cq *cq, int num_entries, struct ibv_wc *wc);
static int fake_req_notify_cq(struct ibv_cq *cq, int solicited_only);
static int fake_post_send(struct ibv_qp *qp, struct ibv_send_wr *wr, struct ibv_send_wr **bad_wr);
static int fake_post_recv(struct ibv_qp *qp, struct ibv_recv_wr *wr, struct ibv_recv_wr **bad_wr);
EXPORT int ibv_query_device(struct ibv_context *context, struct ibv_device_attr *device_attr);
EXPORT int ibv_query_port(struct ibv_context *context, uint8_t port_num, struct _compat_ibv_port_attr *port_attr);

EXPORT struct ibv_context *ibv_open_device(struct ibv_device *device)
{
    if (device != &g_dev) {
        errno = ENODEV;
        return NULL;
    }
    struct fctx *fc = calloc(1, sizeof(*fc));
    if (!fc) {
        errno = ENOMEM;
        return NULL;
    }
    fc->c.device = device;
    fc->c.cmd_fd = -1;
    fc->c.async_fd = -1;
    fc->c.num_comp_vectors = 1;
    fc->c.abi_compat = NULL; /* not a verbs_context: verbs.h inlines use the legacy exports and ops */
    pthread_mutex_init(&fc->c.mutex, NULL);
    fc->c.ops._compat_query_device = ibv_query_device;
    fc->c.ops._compat_query_port = ibv_query_port;
    fc->c.ops.poll_cq = fake_poll_cq;
    fc->c.ops.req_notify_cq = fake_req_notify_cq;
    fc->c.ops.post_send = fake_post_send;
    fc->c.ops.post_recv = fake_post_recv;
    uint64_t v;
    if (env_u64("KVM_FAKE_VERBS_DELAY_US", &v))
        fc->delay_us = (unsigned)v;
    if (env_u64("KVM_FAKE_VERBS_QP_ERROR_AFTER_BYTES", &v)) {
        fc->err_after_on = 1;
        fc->err_after = v;
    }
    pthread_mutex_lock(&g_life);
    if (g_nctx == 0) {
        int e = listener_start();
        if (e) {
            pthread_mutex_unlock(&g_life);
            pthread_mutex_destroy(&fc->c.mutex);
            free(fc);
            errno = e;
            return NULL;
        }
    }
    g_nctx++;
    pthread_mutex_unlock(&g_life);
    return &fc->c;
}

/* man ibv_open_device: returns 0 on success, -1 on failure (here: EBUSY while PDs, CQs or channels are open). */
EXPORT int ibv_close_device(struct ibv_context *context)
{
    struct fctx *fc = (struct fctx *)context;
    pthread_mutex_lock(&g_life);
    pthread_mutex_lock(&g_lock);
    int busy = fc->npd || fc->ncq || fc->nchan;
    pthread_mutex_unlock(&g_lock);
    if (busy) {
        pthread_mutex_unlock(&g_life);
        errno = EBUSY;
        return -1;
    }
    if (--g_nctx == 0)
        listener_stop();
    pthread_mutex_unlock(&g_life);
    pthread_mutex_destroy(&fc->c.mutex);
    free(fc);
    return 0;
}

EXPORT int ibv_query_device(struct ibv_context *context, struct ibv_device_attr *a)
{
    if (!context || !a)
        return EINVAL;
    memset(a, 0, sizeof(*a));
    snprintf(a->fw_ver, sizeof(a->fw_ver), "kvmfake 1.0");
    a->node_guid = htobe64(0x02c0ffeefeed0001ull);
    a->sys_image_guid = a->node_guid;
    a->max_mr_size = UINT64_MAX;
    a->page_size_cap = 0xfffff000;
    a->vendor_id = 0x4b564d;
    a->vendor_part_id = 1;
    a->hw_ver = 1;
    a->max_qp = 1 << 17;
    a->max_qp_wr = FAKE_MAX_QP_WR;
    a->device_cap_flags = IBV_DEVICE_RC_RNR_NAK_GEN | IBV_DEVICE_PORT_ACTIVE_EVENT;
    a->max_sge = FAKE_MAX_SGE;
    a->max_sge_rd = FAKE_MAX_SGE;
    a->max_cq = 1 << 16;
    a->max_cqe = FAKE_MAX_CQE;
    a->max_mr = 1 << 20;
    a->max_pd = 1 << 16;
    a->max_qp_rd_atom = FAKE_MAX_RD_ATOM;
    a->max_res_rd_atom = FAKE_MAX_RD_ATOM << 17;
    a->max_qp_init_rd_atom = FAKE_MAX_RD_ATOM;
    a->atomic_cap = IBV_ATOMIC_NONE;
    a->max_pkeys = 1;
    a->local_ca_ack_delay = 16;
    a->phys_port_cnt = 1;
    return 0;
}

/* Legacy export (verbs.h's ibv_query_port inline memsets a struct ibv_port_attr and calls this when the context is
 * not extended). Only the fields of the legacy struct (up to and including flags) are written. */
EXPORT int ibv_query_port(struct ibv_context *context, uint8_t port_num, struct _compat_ibv_port_attr *port_attr)
{
    struct ibv_port_attr *a = (struct ibv_port_attr *)port_attr;
    if (!context || !a || port_num != 1)
        return EINVAL;
    const char *v = getenv("KVM_FAKE_VERBS_PORT_STATE");
    int down = v && strcasecmp(v, "down") == 0;
    a->state = down ? IBV_PORT_DOWN : IBV_PORT_ACTIVE;
    a->max_mtu = IBV_MTU_4096;
    a->active_mtu = IBV_MTU_4096;
    a->gid_tbl_len = 1;
    a->port_cap_flags = 0;
    a->max_msg_sz = FAKE_MAX_MSG;
    a->bad_pkey_cntr = 0;
    a->qkey_viol_cntr = 0;
    a->pkey_tbl_len = 1;
    a->lid = 0;
    a->sm_lid = 0;
    a->lmc = 0;
    a->max_vl_num = 1;
    a->sm_sl = 0;
    a->subnet_timeout = 0;
    a->init_type_reply = 0;
    a->active_width = 2; /* 4x */
    a->active_speed = 32; /* EDR */
    a->phys_state = down ? 3 /* disabled */ : 5 /* link up */;
    a->link_layer = IBV_LINK_LAYER_ETHERNET;
    a->flags = 0;
    return 0;
}

static void make_gid(union ibv_gid *gid)
{
    memset(gid, 0, sizeof(*gid));
    gid->raw[8] = (uint8_t)(g_listen_port >> 8);
    gid->raw[9] = (uint8_t)g_listen_port;
    gid->raw[10] = 0xff;
    gid->raw[11] = 0xff;
    memcpy(&gid->raw[12], &g_ip, 4);
}

/* man ibv_query_gid: 0 on success, -1 on error */
EXPORT int ibv_query_gid(struct ibv_context *context, uint8_t port_num, int index, union ibv_gid *gid)
{
    if (!context || !gid || port_num != 1 || index != 0) {
        errno = EINVAL;
        return -1;
    }
    pthread_mutex_lock(&g_life);
    make_gid(gid);
    pthread_mutex_unlock(&g_life);
    return 0;
}

EXPORT int _ibv_query_gid_ex(struct ibv_context *context, uint32_t port_num, uint32_t gid_index,
                             struct ibv_gid_entry *entry, uint32_t flags, size_t entry_size)
{
    if (!context || !entry || flags || port_num != 1 || gid_index != 0 || entry_size < sizeof(*entry))
        return EINVAL;
    memset(entry, 0, sizeof(*entry));
    pthread_mutex_lock(&g_life);
    make_gid(&entry->gid);
    pthread_mutex_unlock(&g_life);
    entry->gid_index = 0;
    entry->port_num = 1;
    entry->gid_type = IBV_GID_TYPE_ROCE_V2;
    entry->ndev_ifindex = 0;
    return 0;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* PD, MR                                                                                                      */

EXPORT struct ibv_pd *ibv_alloc_pd(struct ibv_context *context)
{
    if (!context) {
        errno = EINVAL;
        return NULL;
    }
    struct fpd *p = calloc(1, sizeof(*p));
    if (!p) {
        errno = ENOMEM;
        return NULL;
    }
    p->pd.context = context;
    pthread_mutex_lock(&g_lock);
    p->pd.handle = rng32();
    ((struct fctx *)context)->npd++;
    pthread_mutex_unlock(&g_lock);
    return &p->pd;
}

EXPORT int ibv_dealloc_pd(struct ibv_pd *pd)
{
    struct fpd *p = (struct fpd *)pd;
    pthread_mutex_lock(&g_lock);
    if (p->nmr || p->nqp) {
        pthread_mutex_unlock(&g_lock);
        return EBUSY; /* man ibv_alloc_pd: may fail if any other resource is still associated with the PD */
    }
    ((struct fctx *)pd->context)->npd--;
    pthread_mutex_unlock(&g_lock);
    free(p);
    return 0;
}

/* g_lock held */
static int key_used(uint32_t k)
{
    if (k == 0)
        return 1;
    for (struct fmr *m = g_mrs; m; m = m->next)
        if (m->mr.lkey == k || m->mr.rkey == k)
            return 1;
    return 0;
}

EXPORT struct ibv_mr *ibv_reg_mr_iova2(struct ibv_pd *pd, void *addr, size_t length, uint64_t iova,
                                       unsigned int access)
{
    if (!pd || (!addr && length)) {
        errno = EINVAL;
        return NULL;
    }
    /* man ibv_reg_mr: if IBV_ACCESS_REMOTE_WRITE or IBV_ACCESS_REMOTE_ATOMIC is set, IBV_ACCESS_LOCAL_WRITE must
     * be set too. */
    if ((access & (IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC)) && !(access & IBV_ACCESS_LOCAL_WRITE)) {
        errno = EINVAL;
        return NULL;
    }
    if (access & IBV_ACCESS_ON_DEMAND) {
        errno = EOPNOTSUPP;
        return NULL;
    }
    if (iova + length < iova) {
        errno = EINVAL;
        return NULL;
    }
    struct fmr *m = calloc(1, sizeof(*m));
    if (!m) {
        errno = ENOMEM;
        return NULL;
    }
    m->mr.context = pd->context;
    m->mr.pd = pd;
    m->mr.addr = addr;
    m->mr.length = length;
    m->host = addr;
    m->iova = iova;
    m->len = length;
    m->access = (int)access;
    pthread_mutex_lock(&g_lock);
    uint32_t k;
    do
        k = rng32();
    while (key_used(k));
    m->mr.lkey = k;
    do
        k = rng32();
    while (key_used(k) || k == m->mr.lkey);
    m->mr.rkey = k;
    m->mr.handle = m->mr.lkey;
    m->next = g_mrs;
    g_mrs = m;
    ((struct fpd *)pd)->nmr++;
    pthread_mutex_unlock(&g_lock);
    return &m->mr;
}

EXPORT struct ibv_mr *ibv_reg_mr(struct ibv_pd *pd, void *addr, size_t length, int access)
{
    return ibv_reg_mr_iova2(pd, addr, length, (uintptr_t)addr, (unsigned)access);
}

EXPORT struct ibv_mr *ibv_reg_mr_iova(struct ibv_pd *pd, void *addr, size_t length, uint64_t iova, int access)
{
    return ibv_reg_mr_iova2(pd, addr, length, iova, (unsigned)access);
}

EXPORT struct ibv_mr *ibv_reg_dmabuf_mr(struct ibv_pd *pd, uint64_t offset, size_t length, uint64_t iova, int fd,
                                        int access)
{
    (void)pd, (void)offset, (void)length, (void)iova, (void)fd, (void)access;
    errno = EOPNOTSUPP; /* the fake has no dma-buf support */
    return NULL;
}

EXPORT int ibv_dereg_mr(struct ibv_mr *mr)
{
    struct fmr *m = (struct fmr *)mr;
    if (!m)
        return EINVAL;
    pthread_mutex_lock(&g_lock);
    struct fmr **pp = &g_mrs;
    while (*pp && *pp != m)
        pp = &(*pp)->next;
    if (!*pp) {
        pthread_mutex_unlock(&g_lock);
        return EINVAL;
    }
    *pp = m->next; /* unlinked: no new remote access finds its rkey */
    while (m->busy)
        pthread_cond_wait(&g_mr_cond, &g_lock); /* copies in progress end first */
    ((struct fpd *)mr->pd)->nmr--;
    pthread_mutex_unlock(&g_lock);
    free(m);
    return 0;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* completion channels and CQs                                                                                 */

EXPORT struct ibv_comp_channel *ibv_create_comp_channel(struct ibv_context *context)
{
    if (!context) {
        errno = EINVAL;
        return NULL;
    }
    struct fchan *ch = calloc(1, sizeof(*ch));
    if (!ch) {
        errno = ENOMEM;
        return NULL;
    }
    int p[2];
    if (pipe2(p, O_CLOEXEC)) {
        int e = errno;
        free(ch);
        errno = e;
        return NULL;
    }
    fcntl(p[1], F_SETFL, O_NONBLOCK); /* an event that does not fit is dropped, never blocks the "NIC" */
    ch->ch.context = context;
    ch->ch.fd = p[0];
    ch->ch.refcnt = 0;
    ch->wfd = p[1];
    pthread_mutex_lock(&g_lock);
    ((struct fctx *)context)->nchan++;
    pthread_mutex_unlock(&g_lock);
    return &ch->ch;
}

EXPORT int ibv_destroy_comp_channel(struct ibv_comp_channel *channel)
{
    struct fchan *ch = (struct fchan *)channel;
    pthread_mutex_lock(&g_lock);
    if (ch->ncq) {
        pthread_mutex_unlock(&g_lock);
        return EBUSY;
    }
    ((struct fctx *)channel->context)->nchan--;
    pthread_mutex_unlock(&g_lock);
    close(ch->ch.fd);
    close(ch->wfd);
    free(ch);
    return 0;
}

EXPORT struct ibv_cq *ibv_create_cq(struct ibv_context *context, int cqe, void *cq_context,
                                    struct ibv_comp_channel *channel, int comp_vector)
{
    if (!context || cqe < 1 || cqe > FAKE_MAX_CQE || comp_vector < 0 || comp_vector >= context->num_comp_vectors ||
        (channel && channel->context != context)) {
        errno = EINVAL;
        return NULL;
    }
    struct fcq *cq = calloc(1, sizeof(*cq));
    if (!cq) {
        errno = ENOMEM;
        return NULL;
    }
    cq->alloc = cqe < 64 ? (uint32_t)cqe : 64;
    cq->ring = calloc(cq->alloc, sizeof(*cq->ring));
    if (!cq->ring) {
        free(cq);
        errno = ENOMEM;
        return NULL;
    }
    cq->max = (uint32_t)cqe;
    cq->cq.context = context;
    cq->cq.channel = channel;
    cq->cq.cq_context = cq_context;
    cq->cq.cqe = cqe;
    pthread_mutex_init(&cq->cq.mutex, NULL);
    pthread_cond_init(&cq->cq.cond, NULL);
    pthread_mutex_init(&cq->lock, NULL);
    cq->chan = (struct fchan *)channel;
    pthread_mutex_lock(&g_lock);
    cq->id = ++g_cq_ids;
    cq->cq.handle = (uint32_t)cq->id;
    cq->next = g_cqs;
    g_cqs = cq;
    ((struct fctx *)context)->ncq++;
    if (cq->chan) {
        cq->chan->ncq++;
        channel->refcnt++;
    }
    pthread_mutex_unlock(&g_lock);
    return &cq->cq;
}

EXPORT int ibv_destroy_cq(struct ibv_cq *cq_)
{
    struct fcq *cq = (struct fcq *)cq_;
    pthread_mutex_lock(&g_lock);
    if (cq->nqp) {
        pthread_mutex_unlock(&g_lock);
        return EBUSY; /* man ibv_create_cq: fails if any queue pair is still associated with this CQ */
    }
    struct fcq **pp = &g_cqs;
    while (*pp && *pp != cq)
        pp = &(*pp)->next;
    if (*pp)
        *pp = cq->next; /* events still in the channel for it are skipped by ibv_get_cq_event */
    pthread_mutex_unlock(&g_lock);
    /* man ibv_get_cq_event: destroying a CQ waits for all completion events to be acknowledged */
    pthread_mutex_lock(&cq_->mutex);
    uint64_t start = now_us();
    int warned = 0;
    while (cq_->comp_events_completed != cq->events_got) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&cq_->cond, &cq_->mutex, &ts);
        if (!warned && now_us() - start > 2000000) {
            warned = 1;
            fprintf(stderr,
                    "fake_verbs: ibv_destroy_cq waits for %u unacknowledged CQ events (ibv_ack_cq_events missing?)\n",
                    cq->events_got - cq_->comp_events_completed);
        }
    }
    pthread_mutex_unlock(&cq_->mutex);
    pthread_mutex_lock(&g_lock);
    ((struct fctx *)cq_->context)->ncq--;
    if (cq->chan) {
        cq->chan->ncq--;
        cq->chan->ch.refcnt--;
    }
    pthread_mutex_unlock(&g_lock);
    pthread_mutex_destroy(&cq->lock);
    pthread_mutex_destroy(&cq_->mutex);
    pthread_cond_destroy(&cq_->cond);
    free(cq->ring);
    free(cq);
    return 0;
}

/* Adds a completion; 0, or -1 when the CQ overflowed (the completion is lost). Lock order: g_lock, qp->lock,
 * cq->lock (callers may hold any prefix). */
static int cq_push(struct fcq *cq, const struct ibv_wc *wc, struct fqp *qp, uint64_t mark)
{
    pthread_mutex_lock(&cq->lock);
    if (cq->count >= cq->max) {
        cq->overflow = 1;
        pthread_mutex_unlock(&cq->lock);
        dbg("CQ %p overflow (%u entries)", (void *)cq, cq->max);
        return -1;
    }
    if (cq->count == cq->alloc) {
        uint32_t na = cq->alloc * 2 > cq->max ? cq->max : cq->alloc * 2;
        struct cqe *nr = malloc((size_t)na * sizeof(*nr));
        if (!nr) {
            cq->overflow = 1;
            pthread_mutex_unlock(&cq->lock);
            return -1;
        }
        for (uint32_t i = 0; i < cq->count; i++)
            nr[i] = cq->ring[(cq->head + i) % cq->alloc];
        free(cq->ring);
        cq->ring = nr;
        cq->alloc = na;
        cq->head = 0;
    }
    struct cqe *e = &cq->ring[(cq->head + cq->count) % cq->alloc];
    e->wc = *wc;
    e->qp = qp;
    e->sq_mark = mark;
    cq->count++;
    /* man ibv_req_notify_cq: one event for the next CQE (solicited_only: only unsuccessful or solicited ones) */
    if (cq->armed && (!cq->armed_sol || wc->status != IBV_WC_SUCCESS)) {
        cq->armed = 0;
        if (cq->chan) {
            if (write(cq->chan->wfd, &cq->id, sizeof(cq->id)) != sizeof(cq->id))
                dbg("completion channel full: event dropped");
        }
    }
    pthread_mutex_unlock(&cq->lock);
    return 0;
}

static int fake_poll_cq(struct ibv_cq *cq_, int num_entries, struct ibv_wc *wc)
{
    struct fcq *cq = (struct fcq *)cq_;
    if (num_entries < 0)
        return -1;
    pthread_mutex_lock(&cq->lock);
    int n = 0;
    while (n < num_entries && cq->count) {
        struct cqe *e = &cq->ring[cq->head];
        wc[n++] = e->wc;
        if (e->qp && e->sq_mark) {
            /* frees the send slots up to this WR (its QP cannot be destroyed while its CQEs are here) */
            uint64_t cur = __atomic_load_n(&e->qp->sq_tail, __ATOMIC_ACQUIRE);
            while (cur < e->sq_mark &&
                   !__atomic_compare_exchange_n(&e->qp->sq_tail, &cur, e->sq_mark, 0, __ATOMIC_ACQ_REL,
                                                __ATOMIC_ACQUIRE)) {
            }
        }
        cq->head = (cq->head + 1) % cq->alloc;
        cq->count--;
    }
    pthread_mutex_unlock(&cq->lock);
    return n;
}

static int fake_req_notify_cq(struct ibv_cq *cq_, int solicited_only)
{
    struct fcq *cq = (struct fcq *)cq_;
    pthread_mutex_lock(&cq->lock);
    cq->armed = 1;
    cq->armed_sol = solicited_only != 0;
    pthread_mutex_unlock(&cq->lock);
    return 0;
}

/* man ibv_get_cq_event: 0 on success, -1 on error (EAGAIN when channel->fd was made O_NONBLOCK and is empty) */
EXPORT int ibv_get_cq_event(struct ibv_comp_channel *channel, struct ibv_cq **cq, void **cq_context)
{
    for (;;) {
        uint64_t id;
        ssize_t r = read(channel->fd, &id, sizeof(id));
        if (r < 0 && errno == EINTR)
            continue;
        if (r != sizeof(id)) {
            if (r >= 0)
                errno = EIO;
            return -1;
        }
        pthread_mutex_lock(&g_lock);
        struct fcq *c = g_cqs;
        while (c && c->id != id)
            c = c->next;
        if (c) {
            pthread_mutex_lock(&c->cq.mutex);
            c->events_got++;
            pthread_mutex_unlock(&c->cq.mutex);
        }
        pthread_mutex_unlock(&g_lock);
        if (!c)
            continue; /* an event of a destroyed CQ */
        *cq = &c->cq;
        *cq_context = c->cq.cq_context;
        return 0;
    }
}

EXPORT void ibv_ack_cq_events(struct ibv_cq *cq, unsigned int nevents)
{
    pthread_mutex_lock(&cq->mutex);
    cq->comp_events_completed += nevents;
    pthread_cond_signal(&cq->cond);
    pthread_mutex_unlock(&cq->mutex);
}

/* ------------------------------------------------------------------------------------------------------------ */
/* QPs                                                                                                         */

static void *qp_worker(void *arg);

static void qp_wake(struct fqp *q)
{
    uint64_t one = 1;
    if (write(q->wakefd, &one, sizeof(one)) < 0) {
        /* eventfd counter saturation only: already readable */
    }
}

/* q->lock held: ERR; posted receives complete with IBV_WC_WR_FLUSH_ERR now, the send queue is flushed in order by
 * the worker (man ibv_modify_qp / IB spec: in ERR all outstanding and later WRs complete in error). */
static void qp_set_err_locked(struct fqp *q)
{
    if (q->state != IBV_QPS_ERR) {
        q->state = IBV_QPS_ERR;
        q->qp.state = IBV_QPS_ERR;
    }
    while (q->rq_tail != q->rq_head) {
        struct ibv_wc wc;
        memset(&wc, 0, sizeof(wc));
        wc.wr_id = q->rq[q->rq_tail % q->max_recv_wr];
        wc.status = IBV_WC_WR_FLUSH_ERR;
        wc.opcode = IBV_WC_RECV;
        wc.qp_num = q->qp.qp_num;
        q->rq_tail++;
        (void)cq_push((struct fcq *)q->qp.recv_cq, &wc, NULL, 0);
    }
    pthread_cond_broadcast(&q->cond);
    qp_wake(q);
}

EXPORT struct ibv_qp *ibv_create_qp(struct ibv_pd *pd, struct ibv_qp_init_attr *ia)
{
    if (!pd || !ia || ia->qp_type != IBV_QPT_RC || !ia->send_cq || !ia->recv_cq || ia->srq ||
        ia->cap.max_send_wr > FAKE_MAX_QP_WR || ia->cap.max_recv_wr > FAKE_MAX_QP_WR ||
        ia->cap.max_send_sge > FAKE_MAX_SGE || ia->cap.max_recv_sge > FAKE_MAX_SGE || ia->cap.max_inline_data > 0 ||
        ia->send_cq->context != pd->context || ia->recv_cq->context != pd->context) {
        errno = EINVAL;
        return NULL;
    }
    struct fqp *q = calloc(1, sizeof(*q));
    if (!q) {
        errno = ENOMEM;
        return NULL;
    }
    q->max_send_wr = ia->cap.max_send_wr;
    q->max_recv_wr = ia->cap.max_recv_wr;
    q->max_send_sge = ia->cap.max_send_sge;
    q->max_recv_sge = ia->cap.max_recv_sge;
    q->sq = calloc(q->max_send_wr ? q->max_send_wr : 1, sizeof(*q->sq));
    q->rq = calloc(q->max_recv_wr ? q->max_recv_wr : 1, sizeof(*q->rq));
    q->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (!q->sq || !q->rq || q->wakefd < 0) {
        if (q->wakefd >= 0)
            close(q->wakefd);
        free(q->sq);
        free(q->rq);
        free(q);
        errno = ENOMEM;
        return NULL;
    }
    /* A NIC's queues are pinned when the QP is created: touch every page of the send queue now (calloc's pages are
     * mapped lazily), so posts never take page faults */
    {
        volatile char *p = (volatile char *)q->sq;
        size_t bytes = (q->max_send_wr ? q->max_send_wr : 1) * sizeof(*q->sq);
        for (size_t off = 0; off < bytes; off += 4096)
            p[off] = 0;
    }
    q->fc = (struct fctx *)pd->context;
    q->sq_sig_all = ia->sq_sig_all;
    q->sock = -1;
    q->state = IBV_QPS_RESET;
    q->qp.context = pd->context;
    q->qp.qp_context = ia->qp_context;
    q->qp.pd = pd;
    q->qp.send_cq = ia->send_cq;
    q->qp.recv_cq = ia->recv_cq;
    q->qp.srq = NULL;
    q->qp.state = IBV_QPS_RESET;
    q->qp.qp_type = IBV_QPT_RC;
    pthread_mutex_init(&q->qp.mutex, NULL);
    pthread_cond_init(&q->qp.cond, NULL);
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->cond, NULL);
    if ((errno = pthread_create(&q->worker, NULL, qp_worker, q)) != 0) {
        int e = errno;
        close(q->wakefd);
        free(q->sq);
        free(q->rq);
        free(q);
        errno = e;
        return NULL;
    }
    pthread_mutex_lock(&g_lock);
    if (g_next_qpn == 0)
        g_next_qpn = (rng32() & 0x7fff) << 8;
    do
        g_next_qpn = (g_next_qpn + 1) & 0xffffff;
    while (g_next_qpn < 2 || qp_by_num(g_next_qpn));
    q->qp.qp_num = g_next_qpn;
    q->qp.handle = g_next_qpn;
    ((struct fpd *)pd)->nqp++;
    ((struct fcq *)ia->send_cq)->nqp++;
    ((struct fcq *)ia->recv_cq)->nqp++;
    q->next = g_qps;
    g_qps = q;
    pthread_mutex_unlock(&g_lock);
    ia->cap.max_inline_data = 0;
    return &q->qp;
}

static void cq_clean(struct fcq *cq, struct fqp *q)
{
    pthread_mutex_lock(&cq->lock);
    uint32_t w = 0;
    for (uint32_t i = 0; i < cq->count; i++) {
        struct cqe *e = &cq->ring[(cq->head + i) % cq->alloc];
        if (e->wc.qp_num == q->qp.qp_num)
            continue;
        cq->ring[(cq->head + w) % cq->alloc] = *e;
        w++;
    }
    cq->count = w;
    pthread_mutex_unlock(&cq->lock);
}

EXPORT int ibv_destroy_qp(struct ibv_qp *qp)
{
    struct fqp *q = (struct fqp *)qp;
    pthread_mutex_lock(&g_lock);
    struct fqp **pp = &g_qps;
    while (*pp && *pp != q)
        pp = &(*pp)->next;
    if (!*pp) {
        pthread_mutex_unlock(&g_lock);
        return EINVAL;
    }
    *pp = q->next; /* the responder no longer finds it */
    pthread_mutex_unlock(&g_lock);
    pthread_mutex_lock(&q->lock);
    q->stop = 1;
    pthread_cond_broadcast(&q->cond);
    qp_wake(q);
    pthread_mutex_unlock(&q->lock);
    pthread_join(q->worker, NULL); /* outstanding work is dropped without completions */
    if (q->sock >= 0)
        close(q->sock);
    cq_clean((struct fcq *)qp->send_cq, q);
    if (qp->recv_cq != qp->send_cq)
        cq_clean((struct fcq *)qp->recv_cq, q);
    pthread_mutex_lock(&g_lock);
    ((struct fpd *)qp->pd)->nqp--;
    ((struct fcq *)qp->send_cq)->nqp--;
    ((struct fcq *)qp->recv_cq)->nqp--;
    pthread_mutex_unlock(&g_lock);
    close(q->wakefd);
    pthread_mutex_destroy(&q->lock);
    pthread_cond_destroy(&q->cond);
    pthread_mutex_destroy(&q->qp.mutex);
    pthread_cond_destroy(&q->qp.cond);
    free(q->sq);
    free(q->rq);
    free(q);
    return 0;
}

/* man ibv_modify_qp, RC table: required attributes per transition; optional ones as the IB spec / kernel allow */
#define RTR_REQ                                                                                                   \
    (IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC |    \
     IBV_QP_MIN_RNR_TIMER)
#define INIT_REQ (IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS)
#define RTS_REQ                                                                                                   \
    (IBV_QP_STATE | IBV_QP_SQ_PSN | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_MAX_QP_RD_ATOMIC)

EXPORT int ibv_modify_qp(struct ibv_qp *qp, struct ibv_qp_attr *attr, int mask)
{
    struct fqp *q = (struct fqp *)qp;
    if (!q || !attr || !(mask & IBV_QP_STATE))
        return EINVAL;
    pthread_mutex_lock(&q->lock);
    enum ibv_qp_state cur = q->state, next = attr->qp_state;
    int req = 0, opt = IBV_QP_CUR_STATE;
    int ok = 1;
    if ((mask & IBV_QP_CUR_STATE) && attr->cur_qp_state != cur)
        ok = 0;
    if (next == IBV_QPS_RESET || next == IBV_QPS_ERR) {
        req = IBV_QP_STATE;
    } else if (cur == IBV_QPS_RESET && next == IBV_QPS_INIT) {
        req = INIT_REQ;
    } else if (cur == IBV_QPS_INIT && next == IBV_QPS_RTR) {
        req = RTR_REQ;
        opt |= IBV_QP_ALT_PATH | IBV_QP_ACCESS_FLAGS | IBV_QP_PKEY_INDEX;
    } else if (cur == IBV_QPS_RTR && next == IBV_QPS_RTS) {
        req = RTS_REQ;
        opt |= IBV_QP_ALT_PATH | IBV_QP_ACCESS_FLAGS | IBV_QP_MIN_RNR_TIMER | IBV_QP_PATH_MIG_STATE;
    } else {
        ok = 0;
    }
    if (ok && ((mask & req) != req || (mask & ~(req | opt))))
        ok = 0;
    /* values */
    if (ok && (mask & IBV_QP_PORT) && attr->port_num != 1)
        ok = 0;
    if (ok && (mask & IBV_QP_PKEY_INDEX) && attr->pkey_index != 0)
        ok = 0;
    if (ok && (mask & IBV_QP_ACCESS_FLAGS) &&
        (attr->qp_access_flags & ~(unsigned)(IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                                             IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC)))
        ok = 0;
    if (ok && (mask & IBV_QP_PATH_MTU) && (attr->path_mtu < IBV_MTU_256 || attr->path_mtu > IBV_MTU_4096))
        ok = 0;
    if (ok && (mask & IBV_QP_DEST_QPN) && attr->dest_qp_num > 0xffffff)
        ok = 0;
    /* Ethernet link layer: IBV_QPF_GRH_REQUIRED, the AV must be global (man ibv_modify_qp); one GID (index 0) */
    if (ok && (mask & IBV_QP_AV) &&
        (!attr->ah_attr.is_global || attr->ah_attr.grh.sgid_index != 0 ||
         (attr->ah_attr.port_num != 0 && attr->ah_attr.port_num != 1)))
        ok = 0;
    if (ok && (mask & IBV_QP_MAX_DEST_RD_ATOMIC) && attr->max_dest_rd_atomic > FAKE_MAX_RD_ATOM)
        ok = 0;
    if (ok && (mask & IBV_QP_MAX_QP_RD_ATOMIC) && attr->max_rd_atomic > FAKE_MAX_RD_ATOM)
        ok = 0;
    if (ok && (mask & IBV_QP_MIN_RNR_TIMER) && attr->min_rnr_timer > 31)
        ok = 0;
    if (ok && (mask & IBV_QP_TIMEOUT) && attr->timeout > 31)
        ok = 0;
    if (ok && (mask & IBV_QP_RETRY_CNT) && attr->retry_cnt > 7)
        ok = 0;
    if (ok && (mask & IBV_QP_RNR_RETRY) && attr->rnr_retry > 7)
        ok = 0;
    if (!ok) {
        pthread_mutex_unlock(&q->lock); /* man ibv_modify_qp: if invalid, nothing is modified */
        return EINVAL;
    }
    if (mask & IBV_QP_PORT)
        q->port_num = attr->port_num;
    if (mask & IBV_QP_PKEY_INDEX)
        q->pkey_index = attr->pkey_index;
    if (mask & IBV_QP_ACCESS_FLAGS)
        q->access_flags = attr->qp_access_flags;
    if (mask & IBV_QP_PATH_MTU)
        q->path_mtu = attr->path_mtu;
    if (mask & IBV_QP_DEST_QPN)
        q->dest_qp_num = attr->dest_qp_num;
    if (mask & IBV_QP_RQ_PSN)
        q->rq_psn = attr->rq_psn & 0xffffff;
    if (mask & IBV_QP_SQ_PSN)
        q->sq_psn = attr->sq_psn & 0xffffff;
    if (mask & IBV_QP_AV)
        q->ah = attr->ah_attr;
    if (mask & IBV_QP_MAX_DEST_RD_ATOMIC)
        q->max_dest_rd_atomic = attr->max_dest_rd_atomic;
    if (mask & IBV_QP_MAX_QP_RD_ATOMIC)
        q->max_rd_atomic = attr->max_rd_atomic;
    if (mask & IBV_QP_MIN_RNR_TIMER)
        q->min_rnr_timer = attr->min_rnr_timer;
    if (mask & IBV_QP_TIMEOUT)
        q->timeout = attr->timeout;
    if (mask & IBV_QP_RETRY_CNT)
        q->retry_cnt = attr->retry_cnt;
    if (mask & IBV_QP_RNR_RETRY)
        q->rnr_retry = attr->rnr_retry;
    if (next == IBV_QPS_ERR) {
        qp_set_err_locked(q);
    } else if (next == IBV_QPS_RESET) {
        /* everything outstanding is dropped without completions; the connection is closed by the worker */
        q->state = IBV_QPS_RESET;
        q->epoch++;
        q->sq_exec = q->sq_head;
        __atomic_store_n(&q->sq_tail, q->sq_head, __ATOMIC_RELEASE);
        q->rq_tail = q->rq_head;
        pthread_cond_broadcast(&q->cond);
        qp_wake(q);
    } else {
        q->state = next;
    }
    q->qp.state = q->state;
    pthread_mutex_unlock(&q->lock);
    return 0;
}

EXPORT int ibv_query_qp(struct ibv_qp *qp, struct ibv_qp_attr *attr, int attr_mask, struct ibv_qp_init_attr *ia)
{
    struct fqp *q = (struct fqp *)qp;
    (void)attr_mask;
    if (!q || !attr || !ia)
        return EINVAL;
    memset(attr, 0, sizeof(*attr));
    memset(ia, 0, sizeof(*ia));
    pthread_mutex_lock(&q->lock);
    attr->qp_state = q->state;
    attr->cur_qp_state = q->state;
    attr->path_mtu = q->path_mtu;
    attr->rq_psn = q->rq_psn;
    attr->sq_psn = q->sq_psn;
    attr->dest_qp_num = q->dest_qp_num;
    attr->qp_access_flags = q->access_flags;
    attr->cap.max_send_wr = q->max_send_wr;
    attr->cap.max_recv_wr = q->max_recv_wr;
    attr->cap.max_send_sge = q->max_send_sge;
    attr->cap.max_recv_sge = q->max_recv_sge;
    attr->ah_attr = q->ah;
    attr->pkey_index = q->pkey_index;
    attr->max_rd_atomic = q->max_rd_atomic;
    attr->max_dest_rd_atomic = q->max_dest_rd_atomic;
    attr->min_rnr_timer = q->min_rnr_timer;
    attr->port_num = q->port_num;
    attr->timeout = q->timeout;
    attr->retry_cnt = q->retry_cnt;
    attr->rnr_retry = q->rnr_retry;
    pthread_mutex_unlock(&q->lock);
    ia->qp_context = qp->qp_context;
    ia->send_cq = qp->send_cq;
    ia->recv_cq = qp->recv_cq;
    ia->cap = attr->cap;
    ia->qp_type = IBV_QPT_RC;
    ia->sq_sig_all = q->sq_sig_all;
    return 0;
}

/* man ibv_post_send: returns 0 or the value of errno, *bad_wr = the first WR not posted */
static int fake_post_send(struct ibv_qp *qp, struct ibv_send_wr *wr, struct ibv_send_wr **bad_wr)
{
    struct fqp *q = (struct fqp *)qp;
    int rc = 0;
    pthread_mutex_lock(&q->lock);
    if (q->state != IBV_QPS_RTS && q->state != IBV_QPS_ERR) {
        rc = EINVAL;
    } else {
        /* The worker moves the tail as completions are polled: read it once, and again only when the queue looks
         * full, so a long chain does not bounce its cache line once per work request. */
        uint64_t tail = __atomic_load_n(&q->sq_tail, __ATOMIC_ACQUIRE);
        for (; wr; wr = wr->next) {
            if ((wr->opcode != IBV_WR_RDMA_READ && wr->opcode != IBV_WR_RDMA_WRITE &&
                 wr->opcode != IBV_WR_RDMA_WRITE_WITH_IMM) ||
                wr->num_sge < 0 || (uint32_t)wr->num_sge > q->max_send_sge || (wr->num_sge && !wr->sg_list) ||
                (wr->send_flags & IBV_SEND_INLINE)) {
                rc = EINVAL;
                break;
            }
            if (q->sq_head - tail >= q->max_send_wr)
                tail = __atomic_load_n(&q->sq_tail, __ATOMIC_ACQUIRE);
            if (q->sq_head - tail >= q->max_send_wr) {
                rc = ENOMEM;
                break;
            }
            struct swr *s = &q->sq[q->sq_head % q->max_send_wr];
            s->wr_id = wr->wr_id;
            s->opcode = wr->opcode;
            s->flags = wr->send_flags;
            s->imm = wr->imm_data;
            s->raddr = wr->wr.rdma.remote_addr;
            s->rkey = wr->wr.rdma.rkey;
            s->nsge = wr->num_sge;
            for (int i = 0; i < wr->num_sge; i++)
                s->sge[i] = wr->sg_list[i];
            q->sq_head++;
        }
        pthread_cond_broadcast(&q->cond);
    }
    pthread_mutex_unlock(&q->lock);
    if (rc && bad_wr)
        *bad_wr = wr;
    return rc;
}

/* man ibv_post_recv: an immediate error in RESET; in ERR the WRs complete flushed */
static int fake_post_recv(struct ibv_qp *qp, struct ibv_recv_wr *wr, struct ibv_recv_wr **bad_wr)
{
    struct fqp *q = (struct fqp *)qp;
    int rc = 0;
    pthread_mutex_lock(&q->lock);
    if (q->state == IBV_QPS_RESET) {
        rc = EINVAL;
    } else {
        for (; wr; wr = wr->next) {
            if (wr->num_sge < 0 || (uint32_t)wr->num_sge > q->max_recv_sge || (wr->num_sge && !wr->sg_list)) {
                rc = EINVAL;
                break;
            }
            if (q->rq_head - q->rq_tail >= q->max_recv_wr) {
                rc = ENOMEM;
                break;
            }
            q->rq[q->rq_head % q->max_recv_wr] = wr->wr_id;
            q->rq_head++;
        }
        if (q->state == IBV_QPS_ERR)
            qp_set_err_locked(q);
    }
    pthread_mutex_unlock(&q->lock);
    if (rc && bad_wr)
        *bad_wr = wr;
    return rc;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* requester                                                                                                   */

enum { XS_ABORT = -1 };

struct xfer {
    struct fqp *q;
    int fd;
    unsigned timeout_ms;
};

/* waits for fd events, the QP's wake, or the transport timeout: 1 ready, 0 timed out, -1 woken (abort) */
static int xwait(struct xfer *x, short ev)
{
    struct pollfd p[2] = {{x->fd, ev, 0}, {x->q->wakefd, POLLIN, 0}};
    for (;;) {
        int r = poll(p, 2, (int)x->timeout_ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return 0;
        if (p[1].revents)
            return -1;
        return r > 0 ? 1 : 0;
    }
}

/* 0 ok; else the completion status (or XS_ABORT); local memory faults are IBV_WC_LOC_PROT_ERR */
static int xsend(struct xfer *x, const void *buf, size_t len, int local)
{
    const char *p = buf;
    while (len) {
        ssize_t r = send(x->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r > 0) {
            p += r;
            len -= (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EFAULT && local)
            return IBV_WC_LOC_PROT_ERR;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int w = xwait(x, POLLOUT);
            if (w < 0)
                return XS_ABORT;
            if (w == 0)
                return IBV_WC_RETRY_EXC_ERR;
            continue;
        }
        dbg("send: %s", strerror(errno));
        return IBV_WC_RETRY_EXC_ERR;
    }
    return 0;
}

static int xrecv(struct xfer *x, void *buf, size_t len, int local)
{
    char *p = buf;
    while (len) {
        ssize_t r = recv(x->fd, p, len, MSG_DONTWAIT);
        if (r > 0) {
            p += r;
            len -= (size_t)r;
            continue;
        }
        if (r == 0) {
            dbg("recv: peer closed");
            return IBV_WC_RETRY_EXC_ERR;
        }
        if (errno == EINTR)
            continue;
        if (errno == EFAULT && local)
            return IBV_WC_LOC_PROT_ERR;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int w = xwait(x, POLLIN);
            if (w < 0)
                return XS_ABORT;
            if (w == 0) {
                dbg("recv: transport timeout (%u ms)", x->timeout_ms);
                return IBV_WC_RETRY_EXC_ERR;
            }
            continue;
        }
        dbg("recv: %s", strerror(errno));
        return IBV_WC_RETRY_EXC_ERR;
    }
    return 0;
}

static int xconnect(struct xfer *x, uint32_t ip, uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return IBV_WC_RETRY_EXC_ERR;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = ip;
    sa.sin_port = htons(port);
    x->fd = fd;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (errno != EINPROGRESS) {
            dbg("connect: %s", strerror(errno));
            close(fd);
            x->fd = -1;
            return IBV_WC_RETRY_EXC_ERR;
        }
        int w = xwait(x, POLLOUT);
        int err = 0;
        socklen_t el = sizeof(err);
        if (w <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) || err) {
            dbg("connect: %s", w < 0 ? "aborted" : w == 0 ? "timeout" : strerror(err));
            close(fd);
            x->fd = -1;
            return w < 0 ? XS_ABORT : IBV_WC_RETRY_EXC_ERR;
        }
    }
    return 0;
}

/* IB min_rnr_timer encoding in microseconds */
static unsigned rnr_delay_us(uint8_t t)
{
    static const unsigned us[32] = {655360, 10,    20,    30,    40,    60,     80,     120,
                                    160,    240,   320,   480,   640,   960,    1280,   1920,
                                    2560,   3840,  5120,  7680,  10240, 15360,  20480,  30720,
                                    40960,  61440, 81920, 122880, 163840, 245760, 327680, 491520};
    unsigned d = us[t & 31];
    return d < 1000 ? 1000 : d > 100000 ? 100000 : d;
}

/* sleeps, abortable by the QP's wake: 0 slept, -1 woken */
static int xsleep(struct fqp *q, unsigned us)
{
    struct pollfd p = {q->wakefd, POLLIN, 0};
    int r = poll(&p, 1, (int)((us + 999) / 1000));
    return r > 0 ? -1 : 0;
}

struct lseg {
    char *p;
    uint64_t n;
};

/* Executes one WR: returns an ibv_wc_status or XS_ABORT. */
static int execute(struct fqp *q, const struct swr *w, uint64_t *moved)
{
    if (q->fc->delay_us && xsleep(q, q->fc->delay_us))
        return XS_ABORT;
    if (q->fc->err_after_on && q->bytes_moved >= q->fc->err_after)
        return IBV_WC_GENERAL_ERR; /* the "NIC" drives the QP to error */
    /* local SGEs: lkey of an MR of this PD, bounds; READ writes local memory: LOCAL_WRITE (man ibv_reg_mr) */
    struct lseg seg[FAKE_MAX_SGE];
    uint64_t total = 0;
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < w->nsge; i++) {
        const struct ibv_sge *s = &w->sge[i];
        struct fmr *m = g_mrs;
        while (m && m->mr.lkey != s->lkey)
            m = m->next;
        if (!m || m->mr.pd != q->qp.pd || s->addr < m->iova || s->length > m->len ||
            s->addr - m->iova > m->len - s->length ||
            (w->opcode == IBV_WR_RDMA_READ && !(m->access & IBV_ACCESS_LOCAL_WRITE))) {
            pthread_mutex_unlock(&g_lock);
            return IBV_WC_LOC_PROT_ERR;
        }
        seg[i].p = m->host + (s->addr - m->iova);
        seg[i].n = s->length;
        total += s->length;
    }
    pthread_mutex_unlock(&g_lock);
    if (total > FAKE_MAX_MSG)
        return IBV_WC_LOC_LEN_ERR;

    /* transport timeout: 4.096 us * 2^timeout per try, (retry_cnt + 1) tries; [5 ms, 30 s]; 0 = 30 s */
    struct xfer x = {q, q->sock, 30000};
    if (q->timeout) {
        double ms = 4.096e-3 * (double)(1ull << q->timeout) * (q->retry_cnt + 1);
        x.timeout_ms = ms < 5 ? 5 : ms > 30000 ? 30000 : (unsigned)ms;
    }
    if (x.fd < 0) {
        uint16_t port = (uint16_t)(q->ah.grh.dgid.raw[8] << 8 | q->ah.grh.dgid.raw[9]);
        uint32_t ip;
        memcpy(&ip, &q->ah.grh.dgid.raw[12], 4);
        int rc = xconnect(&x, ip, port);
        if (rc)
            return rc;
        q->sock = x.fd;
    }
    struct wire_hdr h;
    memset(&h, 0, sizeof(h));
    h.magic = WIRE_MAGIC;
    h.op = w->opcode == IBV_WR_RDMA_READ ? OP_READ : w->opcode == IBV_WR_RDMA_WRITE ? OP_WRITE : OP_WRITE_IMM;
    h.src_qpn = q->qp.qp_num;
    h.dst_qpn = q->dest_qp_num;
    h.imm = w->imm;
    h.rkey = w->rkey;
    h.raddr = w->raddr;
    h.len = total;
    unsigned rnr_tries = 0;
    for (;;) {
        int rc = xsend(&x, &h, sizeof(h), 0);
        for (int i = 0; !rc && h.op != OP_READ && i < w->nsge; i++)
            rc = xsend(&x, seg[i].p, seg[i].n, 1);
        struct wire_hdr r;
        if (!rc)
            rc = xrecv(&x, &r, sizeof(r), 0);
        if (!rc && (r.magic != WIRE_MAGIC || r.op != OP_RESP))
            rc = IBV_WC_BAD_RESP_ERR;
        if (rc)
            return rc;
        if (r.status == ST_NOQP)
            return IBV_WC_RETRY_EXC_ERR; /* immediate: see the header comment */
        if (r.status == ST_ACCESS)
            return IBV_WC_REM_ACCESS_ERR;
        if (r.status == ST_RNR) {
            /* rnr_retry 7 = retry forever (man ibv_modify_qp / IB spec) */
            if (q->rnr_retry != 7 && rnr_tries >= q->rnr_retry)
                return IBV_WC_RNR_RETRY_EXC_ERR;
            rnr_tries++;
            if (xsleep(q, rnr_delay_us(r.rnr_timer)))
                return XS_ABORT;
            continue;
        }
        if (r.status != ST_OK)
            return IBV_WC_BAD_RESP_ERR;
        if (h.op == OP_READ) {
            uint64_t got = 0;
            int si = 0;
            uint64_t soff = 0;
            while (got < total) {
                struct chunk_hdr c;
                rc = xrecv(&x, &c, sizeof(c), 0);
                if (rc)
                    return rc;
                if (c.status != ST_OK)
                    return IBV_WC_REM_ACCESS_ERR;
                if (c.n == 0 || c.n > total - got)
                    return IBV_WC_BAD_RESP_ERR;
                uint64_t left = c.n;
                while (left) {
                    while (soff == seg[si].n) {
                        si++;
                        soff = 0;
                    }
                    uint64_t n = seg[si].n - soff < left ? seg[si].n - soff : left;
                    rc = xrecv(&x, seg[si].p + soff, n, 1);
                    if (rc)
                        return rc;
                    soff += n;
                    left -= n;
                }
                got += c.n;
            }
        }
        *moved = total;
        return IBV_WC_SUCCESS;
    }
}

static void complete_send(struct fqp *q, const struct swr *w, uint64_t idx, int status, uint64_t len)
{
    struct ibv_wc wc;
    memset(&wc, 0, sizeof(wc));
    wc.wr_id = w->wr_id;
    wc.status = (enum ibv_wc_status)status;
    /* for error completions the opcode is undefined (man ibv_poll_cq); it is set as for success anyway */
    wc.opcode = w->opcode == IBV_WR_RDMA_READ ? IBV_WC_RDMA_READ : IBV_WC_RDMA_WRITE;
    wc.byte_len = status == IBV_WC_SUCCESS && w->opcode == IBV_WR_RDMA_READ ? (uint32_t)len : 0;
    wc.qp_num = q->qp.qp_num;
    wc.vendor_err = 0;
    if (cq_push((struct fcq *)q->qp.send_cq, &wc, q, idx + 1))
        qp_set_err_locked(q); /* CQ overrun */
}

static void *qp_worker(void *arg)
{
    struct fqp *q = arg;
    pthread_mutex_lock(&q->lock);
    for (;;) {
        while (!q->stop && q->sq_exec == q->sq_head)
            pthread_cond_wait(&q->cond, &q->lock);
        if (q->stop)
            break;
        uint64_t drain;
        if (read(q->wakefd, &drain, sizeof(drain)) < 0) {
            /* nothing pending */
        }
        if (q->sock >= 0 && (q->sock_epoch != q->epoch || q->state == IBV_QPS_ERR)) {
            close(q->sock);
            q->sock = -1;
        }
        q->sock_epoch = q->epoch;
        struct fcq *scq = (struct fcq *)q->qp.send_cq, *rcq = (struct fcq *)q->qp.recv_cq;
        if (q->state != IBV_QPS_ERR &&
            (__atomic_load_n(&scq->overflow, __ATOMIC_RELAXED) || __atomic_load_n(&rcq->overflow, __ATOMIC_RELAXED)))
            qp_set_err_locked(q);
        uint64_t idx = q->sq_exec;
        struct swr w = q->sq[idx % q->max_send_wr];
        if (q->state == IBV_QPS_ERR) {
            /* every WR after an error completes flushed, signaled or not (man ibv_poll_cq) */
            q->sq_exec++;
            complete_send(q, &w, idx, IBV_WC_WR_FLUSH_ERR, 0);
            continue;
        }
        uint64_t ep = q->epoch;
        pthread_mutex_unlock(&q->lock);
        uint64_t moved = 0;
        int st = execute(q, &w, &moved);
        pthread_mutex_lock(&q->lock);
        if (q->stop)
            break;
        if (st != IBV_WC_SUCCESS && q->sock >= 0) {
            close(q->sock); /* the stream state is unknown after any failure */
            q->sock = -1;
        }
        if (ep != q->epoch || q->sq_exec != idx)
            continue; /* reset meanwhile: dropped without completion */
        if (st == XS_ABORT) {
            if (q->state == IBV_QPS_ERR)
                st = IBV_WC_WR_FLUSH_ERR;
            else
                continue; /* spurious wake: run it again */
        }
        q->sq_exec++;
        if (st == IBV_WC_SUCCESS) {
            q->bytes_moved += moved;
            if ((w.flags & IBV_SEND_SIGNALED) || q->sq_sig_all)
                complete_send(q, &w, idx, st, moved);
        } else {
            if (st != IBV_WC_WR_FLUSH_ERR)
                dbg("qp %u wr %llu: %s", q->qp.qp_num, (unsigned long long)w.wr_id,
                    ibv_wc_status_str((enum ibv_wc_status)st));
            complete_send(q, &w, idx, st, 0);
            qp_set_err_locked(q);
        }
    }
    pthread_mutex_unlock(&q->lock);
    return NULL;
}
