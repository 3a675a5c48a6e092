/*
 * kvm_rdma_shim_test.c - end-to-end test of the kvm_rdma.h API (the shim, not raw verbs).
 *
 * Every scenario runs in its own process (this binary re-executes itself with --scenario NAME and the environment
 * the scenario needs); a two-sided scenario forks an exporter (child) and an importer (parent) that exchange QPNs,
 * PSNs, GID, LID, rkey and address over a socketpair and connect a channel through the shim.
 *
 *   kvm_rdma_shim_test            runs the scenarios that need no device (the real libibverbs here has none)
 *   kvm_rdma_shim_test --fake     runs every scenario; LD_LIBRARY_PATH must point at the fake libibverbs.so.1
 *                                 (test/native/fakeverbs: device kvmfake0, RC READ/WRITE carried over TCP)
 *   kvm_rdma_shim_test --scenario NAME    runs one scenario in this process (what the driver does)
 *
 * Build (OUT = an output folder holding libkvmrdma.so):
 *   gcc -O1 -g -Wall -Wextra -Werror -pthread -I../../../main/native -o OUT/kvm_rdma_shim_test kvm_rdma_shim_test.c \
 *       -LOUT -lkvmrdma -libverbs -Wl,-rpath,OUT
 */
#define _GNU_SOURCE
#include "kvm_rdma.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FAKE_DEV "kvmfake0"
#define MAXQP 64
#define WC_SUCCESS 0
#define WC_REM_ACCESS_ERR 10
#define WC_RETRY_EXC_ERR 12
#define WC_WR_FLUSH_ERR 5

static const char *role = "main";

#define CHECK(cond, ...)                                                                                               \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "[%s] FAIL %s:%d: %s: ", role, __FILE__, __LINE__, #cond);                                 \
            fprintf(stderr, __VA_ARGS__);                                                                              \
            fprintf(stderr, " (last shim error: \"%s\")\n", kvm_rdma_error_string());                                  \
            fflush(stderr);                                                                                            \
            _exit(1);                                                                                                  \
        }                                                                                                              \
    } while (0)

#define OK(call)                                                                                                       \
    do {                                                                                                               \
        int rc_ = (call);                                                                                              \
        CHECK(rc_ == KVM_RDMA_OK, "%s returned %d (%s)", #call, rc_, kvm_rdma_code_name(rc_, 0));                      \
    } while (0)

static void note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[%s] ", role);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- deterministic data ---------------------------------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t s = seed | 1;
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(rng_next(&s) >> 24);
}

/* count segments of random length [1, maxlen]; remote offsets laid out in order, local offsets in a shuffled order
 * (both cover [0, total) exactly). Returns total. */
static int64_t make_segments(int count, int maxlen, uint64_t seed, int64_t *loff, int64_t *roff, int64_t *len)
{
    uint64_t s = seed | 1;
    int64_t total = 0;
    for (int i = 0; i < count; i++) {
        len[i] = 1 + (int64_t)(rng_next(&s) % (uint64_t)maxlen);
        roff[i] = total;
        total += len[i];
    }
    int *perm = malloc(sizeof(int) * (size_t)count);
    for (int i = 0; i < count; i++)
        perm[i] = i;
    for (int i = count - 1; i > 0; i--) {
        int j = (int)(rng_next(&s) % (uint64_t)(i + 1));
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    int64_t at = 0;
    for (int k = 0; k < count; k++) {
        loff[perm[k]] = at;
        at += len[perm[k]];
    }
    free(perm);
    return total;
}

/* ---- peer exchange ---------------------------------------------------------------------------------------------- */

static void send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        CHECK(w > 0, "write to peer: %s", strerror(errno));
        c += w;
        n -= (size_t)w;
    }
}

static void recv_all(int fd, void *p, size_t n)
{
    char *c = p;
    while (n) {
        ssize_t r = read(fd, c, n);
        if (r < 0 && errno == EINTR)
            continue;
        CHECK(r > 0, "read from peer: %s", r == 0 ? "peer closed" : strerror(errno));
        c += r;
        n -= (size_t)r;
    }
}

static void say(int fd, int32_t v)
{
    send_all(fd, &v, sizeof v);
}

static int32_t hear(int fd)
{
    int32_t v;
    recv_all(fd, &v, sizeof v);
    return v;
}

struct peer_info {
    int32_t nqp;
    int32_t qpn[MAXQP];
    int32_t psn[MAXQP];
    uint8_t gid[16];
    int32_t lid;
    int32_t mtu;
    int32_t rkey;
    uint64_t addr;
    uint64_t len;
};

struct side {
    uint64_t ctx;
    int32_t info[8];
    uint8_t gid[16];
};

static void side_open(struct side *sd)
{
    memset(sd, 0, sizeof *sd);
    for (int i = 0; i < 8; i++)
        sd->info[i] = -99;
    OK(kvm_rdma_open(FAKE_DEV, 0, -1, &sd->ctx, sd->info, sd->gid));
    CHECK(sd->ctx != 0, "null ctx");
}

/* Creates a channel, exchanges its coordinates with the peer (and my MR's), connects. */
static uint64_t channel_up(struct side *sd, int fd, int nqp, int sq, int rq, int access, uint64_t my_addr,
                           uint64_t my_len, int32_t my_rkey, struct peer_info *remote, int timeout, int retry)
{
    uint64_t ch = 0;
    struct peer_info me;
    memset(&me, 0, sizeof me);
    OK(kvm_rdma_channel_create(sd->ctx, nqp, sq, rq, access, &ch, me.qpn));
    me.nqp = nqp;
    uint64_t s = (uint64_t)getpid() * 7919u + (uint64_t)now_ms();
    for (int i = 0; i < nqp; i++)
        me.psn[i] = (int32_t)(rng_next(&s) & 0xffffff);
    memcpy(me.gid, sd->gid, 16);
    me.lid = sd->info[1];
    me.mtu = sd->info[2];
    me.rkey = my_rkey;
    me.addr = my_addr;
    me.len = my_len;
    send_all(fd, &me, sizeof me);
    recv_all(fd, remote, sizeof *remote);
    CHECK(remote->nqp == nqp, "peer has %d QPs, I have %d", remote->nqp, nqp);
    int mtu = me.mtu < remote->mtu ? me.mtu : remote->mtu;
    OK(kvm_rdma_channel_connect(ch, remote->qpn, remote->gid, remote->lid, remote->psn, me.psn, mtu, 16, timeout,
                                retry, 7));
    /* Neither side posts before both are connected: the fake answers a request for a QP not yet ready to receive
     * with an immediate RETRY_EXC_ERR (a real responder drops it and the requester retries). */
    char up = 'c';
    send_all(fd, &up, 1);
    recv_all(fd, &up, 1);
    return ch;
}

struct wcs {
    int n;
    int64_t wr_id[4096];
    int32_t status[4096], opcode[4096], byte_len[4096], imm[4096], qp[4096];
};

/* Polls until want completions were collected (or the deadline); returns how many. */
static int collect(uint64_t ch, struct wcs *w, int want, int timeout_ms)
{
    w->n = 0;
    int64_t deadline = now_ms() + timeout_ms;
    while (w->n < want) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            break;
        int room = (int)(sizeof w->status / sizeof w->status[0]) - w->n;
        int r = kvm_rdma_poll(ch, room < 64 ? room : 64, (int)left, w->wr_id + w->n, w->status + w->n,
                              w->opcode + w->n, w->byte_len + w->n, w->imm + w->n, w->qp + w->n);
        if (r == KVM_RDMA_ETIMEDOUT)
            break;
        CHECK(r > 0, "kvm_rdma_poll returned %d (%s)", r, kvm_rdma_code_name(r, 0));
        w->n += r;
    }
    return w->n;
}

static void expect_quiet(uint64_t ch, int ms)
{
    int64_t wr;
    int32_t st, op, bl, im, qi;
    int64_t t0 = now_ms();
    int r = kvm_rdma_poll(ch, 1, ms, &wr, &st, &op, &bl, &im, &qi);
    int64_t dt = now_ms() - t0;
    CHECK(r == KVM_RDMA_ETIMEDOUT, "expected KVM_RDMA_ETIMEDOUT, got %d (%s; wr_id %lld status %s)", r,
          kvm_rdma_code_name(r, 0), r > 0 ? (long long)wr : -1LL, r > 0 ? kvm_rdma_code_name(st, 1) : "-");
    CHECK(dt >= ms - 5 && dt < ms + 1000, "poll(%d ms) returned ETIMEDOUT after %lld ms", ms, (long long)dt);
}

static void expect_live_zero(void)
{
    int64_t live[4] = {-1, -1, -1, -1};
    kvm_rdma_live(live);
    CHECK(live[0] == 0 && live[1] == 0 && live[2] == 0 && live[3] == 0,
          "live counters ctx %lld mr %lld channel %lld qp %lld, expected all 0", (long long)live[0],
          (long long)live[1], (long long)live[2], (long long)live[3]);
}

/* ---- two-process harness ---------------------------------------------------------------------------------------- */

typedef void (*role_fn)(int fd);

static int two_sided(role_fn exporter, role_fn importer)
{
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair: %s", strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        role = "exporter";
        close(sv[0]);
        exporter(sv[1]);
        close(sv[1]);
        fflush(NULL);
        _exit(0);
    }
    role = "importer";
    close(sv[1]);
    pid_t ipid = fork(); /* the importer runs in its own child too, so that a CHECK failure there reaps cleanly */
    CHECK(ipid >= 0, "fork: %s", strerror(errno));
    if (ipid == 0) {
        importer(sv[0]);
        close(sv[0]);
        fflush(NULL);
        _exit(0);
    }
    close(sv[0]);
    role = "main";
    int st1 = 0, st2 = 0;
    waitpid(ipid, &st1, 0);
    waitpid(pid, &st2, 0);
    int ok = WIFEXITED(st1) && WEXITSTATUS(st1) == 0 && WIFEXITED(st2) && WEXITSTATUS(st2) == 0;
    if (!ok)
        note("importer status 0x%x, exporter status 0x%x", st1, st2);
    return ok ? 0 : 1;
}

/* ---- scenarios without a device ---------------------------------------------------------------------------------- */

static void *thread_error_string(void *arg)
{
    (void)arg;
    const char *e = kvm_rdma_error_string();
    return (void *)(uintptr_t)(e != NULL && e[0] == '\0');
}

static int sc_nodevice(void)
{
    char cause[128];
    memset(cause, 'x', sizeof cause);
    int n = kvm_rdma_probe(cause, sizeof cause);
    CHECK(n == 0, "probe returned %d, cause \"%s\"", n, cause);
    CHECK(strcmp(cause, "no RDMA device") == 0, "probe cause \"%s\"", cause);
    char tiny[4];
    CHECK(kvm_rdma_probe(tiny, sizeof tiny) == 0 && strlen(tiny) == 3, "probe with a 4-byte cause: \"%s\"", tiny);
    CHECK(kvm_rdma_probe(NULL, 0) == 0, "probe without cause");

    uint64_t ctx = 77;
    int32_t info[8];
    uint8_t gid[16];
    int rc = kvm_rdma_open(NULL, 0, -1, &ctx, info, gid);
    CHECK(rc == KVM_RDMA_ENODEV && ctx == 0, "open(NULL) = %d (%s), ctx %llu", rc, kvm_rdma_code_name(rc, 0),
          (unsigned long long)ctx);
    rc = kvm_rdma_open("mlx5_0", 1, 0, &ctx, info, gid);
    CHECK(rc == KVM_RDMA_ENODEV, "open(mlx5_0) = %d", rc);
    CHECK(strstr(kvm_rdma_error_string(), "no RDMA device") != NULL, "error string \"%s\"", kvm_rdma_error_string());

    /* null handles and bad arguments */
    int64_t off = 0, len = 1;
    int32_t i32 = 0;
    uint64_t h = 0;
    CHECK(kvm_rdma_close(0) == KVM_RDMA_EINVAL, "close(0)");
    CHECK(kvm_rdma_dereg(0) == KVM_RDMA_EINVAL, "dereg(0)");
    CHECK(kvm_rdma_reg(0, 4096, 4096, 4, 0, &h, &i32, &i32) == KVM_RDMA_EINVAL, "reg(0)");
    CHECK(kvm_rdma_channel_create(0, 1, 1, 1, 0, &h, &i32) == KVM_RDMA_EINVAL, "channel_create(0)");
    CHECK(kvm_rdma_channel_connect(0, &i32, gid, 0, &i32, &i32, 3, 1, 14, 7, 7) == KVM_RDMA_EINVAL, "connect(0)");
    CHECK(kvm_rdma_channel_fail(0) == KVM_RDMA_EINVAL, "fail(0)");
    CHECK(kvm_rdma_channel_destroy(0) == KVM_RDMA_EINVAL, "destroy(0)");
    CHECK(kvm_rdma_post(0, 0, 0, 0, 0, 0, 0, &off, &off, &len, 1, 0) == KVM_RDMA_EINVAL, "post(0)");
    CHECK(kvm_rdma_post_recv(0, 0, 1) == KVM_RDMA_EINVAL, "post_recv(0)");
    CHECK(kvm_rdma_poll(0, 1, 0, &off, &i32, &i32, &i32, &i32, &i32) == KVM_RDMA_EINVAL, "poll(0)");
    CHECK(strstr(kvm_rdma_error_string(), "kvm_rdma_poll") != NULL, "error string \"%s\"", kvm_rdma_error_string());

    /* the error string is per thread */
    pthread_t t;
    void *clean = NULL;
    CHECK(pthread_create(&t, NULL, thread_error_string, NULL) == 0, "pthread_create");
    pthread_join(t, &clean);
    CHECK(clean != NULL, "a fresh thread's error string is not \"\"");

    /* names */
    CHECK(strcmp(kvm_rdma_code_name(KVM_RDMA_ETIMEDOUT, 0), "KVM_RDMA_ETIMEDOUT") == 0, "code name");
    CHECK(strcmp(kvm_rdma_code_name(-(KVM_RDMA_ERRNO_BASE + EBUSY), 0), "EBUSY") == 0, "errno code name");
    CHECK(strcmp(kvm_rdma_code_name(WC_REM_ACCESS_ERR, 1), "remote access error") == 0, "wc name \"%s\"",
          kvm_rdma_code_name(WC_REM_ACCESS_ERR, 1));
    CHECK(kvm_rdma_code_name(12345, 0) != NULL && kvm_rdma_code_name(-999999, 1) != NULL, "names never NULL");
    expect_live_zero();
    return 0;
}

static int sc_portdown(void)
{
    char cause[128];
    int n = kvm_rdma_probe(cause, sizeof cause);
    CHECK(n == 0, "probe returned %d, cause \"%s\"", n, cause);
    CHECK(strcmp(cause, FAKE_DEV ": no ACTIVE port") == 0, "probe cause \"%s\"", cause);
    uint64_t ctx = 0;
    int32_t info[8];
    uint8_t gid[16];
    int rc = kvm_rdma_open(NULL, 0, -1, &ctx, info, gid);
    CHECK(rc == KVM_RDMA_ENOPORT, "open(NULL) = %d (%s)", rc, kvm_rdma_code_name(rc, 0));
    rc = kvm_rdma_open(FAKE_DEV, 0, -1, &ctx, info, gid);
    CHECK(rc == KVM_RDMA_ENOPORT, "open(kvmfake0) = %d (%s)", rc, kvm_rdma_code_name(rc, 0));
    rc = kvm_rdma_open(FAKE_DEV, 1, -1, &ctx, info, gid);
    CHECK(rc == KVM_RDMA_ENOPORT, "open(kvmfake0, port 1) = %d (%s)", rc, kvm_rdma_code_name(rc, 0));
    expect_live_zero();
    return 0;
}

static int sc_probe(void)
{
    char cause[128] = "junk";
    int n = kvm_rdma_probe(cause, sizeof cause);
    CHECK(n == 1, "probe returned %d, cause \"%s\"", n, cause);
    CHECK(cause[0] == '\0', "cause \"%s\" with a device", cause);
    uint64_t ctx = 0, ctx2 = 0;
    int32_t info[8];
    uint8_t gid[16];
    OK(kvm_rdma_open(FAKE_DEV, 0, -1, &ctx, info, gid));
    OK(kvm_rdma_close(ctx));
    CHECK(kvm_rdma_error_string()[0] == '\0', "successful calls left the error string \"%s\"", kvm_rdma_error_string());
    int rc = kvm_rdma_open("nosuchdev", 0, -1, &ctx, info, gid);
    CHECK(rc == KVM_RDMA_ENODEV, "open(nosuchdev) = %d", rc);
    rc = kvm_rdma_open(FAKE_DEV, 2, -1, &ctx, info, gid);
    CHECK(rc == KVM_RDMA_ENOPORT, "open(kvmfake0, port 2) = %d (%s)", rc, kvm_rdma_code_name(rc, 0));
    OK(kvm_rdma_open(NULL, 0, -1, &ctx, info, gid));
    note("info: port %d lid %d mtu %d link %d gid_index %d rd_atom %d max_qp_wr %d max_cqe %d", info[0], info[1],
         info[2], info[3], info[4], info[5], info[6], info[7]);
    CHECK(info[0] == 1 && info[3] == 2 && info[4] >= 0 && info[2] >= 1 && info[2] <= 5, "info");
    CHECK(gid[10] == 0xff && gid[11] == 0xff, "GID bytes 10..11 %02x %02x", gid[10], gid[11]);
    OK(kvm_rdma_open(FAKE_DEV, 1, info[4], &ctx2, info, gid));
    int64_t live[4];
    kvm_rdma_live(live);
    CHECK(live[0] == 2, "live ctx %lld", (long long)live[0]);

    /* close refuses while an MR is open */
    size_t sz = 1 << 16;
    void *buf = aligned_alloc(4096, sz);
    uint64_t mr = 0;
    int32_t lkey = 0, rkey = 0;
    OK(kvm_rdma_reg(ctx, (uint64_t)(uintptr_t)buf, sz, KVM_RDMA_LOCAL_WRITE | KVM_RDMA_REMOTE_READ, 0, &mr, &lkey,
                    &rkey));
    rc = kvm_rdma_close(ctx);
    CHECK(rc == -(KVM_RDMA_ERRNO_BASE + EBUSY), "close with an MR open = %d", rc);
    /* CUDA flag on host memory: the dma-buf path is unavailable here and must fall back to ibv_reg_mr */
    uint64_t mr2 = 0;
    OK(kvm_rdma_reg(ctx, (uint64_t)(uintptr_t)buf, sz, KVM_RDMA_LOCAL_WRITE, 1, &mr2, &lkey, &rkey));
    OK(kvm_rdma_dereg(mr2));
    /* channel create on an unconnected channel: post is ESTATE */
    uint64_t ch = 0;
    int32_t qpns[4];
    OK(kvm_rdma_channel_create(ctx, 4, 8, 0, KVM_RDMA_REMOTE_READ, &ch, qpns));
    int64_t off = 0, len = 8;
    rc = kvm_rdma_post(ch, KVM_RDMA_OP_READ, 0, (uint64_t)(uintptr_t)buf, lkey, 0x1000, rkey, &off, &off, &len, 1, 0);
    CHECK(rc == KVM_RDMA_ESTATE, "post on an unconnected channel = %d", rc);
    rc = kvm_rdma_post_recv(ch, 0, 1);
    CHECK(rc == KVM_RDMA_EINVAL, "post_recv on a channel with rq_depth 0 = %d", rc);
    rc = kvm_rdma_close(ctx);
    CHECK(rc == -(KVM_RDMA_ERRNO_BASE + EBUSY), "close with a channel open = %d", rc);
    OK(kvm_rdma_channel_destroy(ch)); /* never connected */
    OK(kvm_rdma_dereg(mr));
    OK(kvm_rdma_close(ctx));
    OK(kvm_rdma_close(ctx2));
    free(buf);
    expect_live_zero();
    return 0;
}

/* ---- two-sided scenarios ------------------------------------------------------------------------------------------ */

#define NSEG 8192
#define MAXSEG 2048
#define NQP 4
#define SQ 2048
#define RQ 64
#define BUF_SEED 0x5eed1234abcdULL
#define SEG_SEED 0x5e65eedULL
#define WSEG_SEED 0x77e17eULL
#define WDATA_SEED 0xda7a77ULL
#define IMM_VALUE ((int32_t)0xA1B2C3D4u)

static size_t buf_size(void)
{
    return (size_t)NSEG * MAXSEG;
}

/* exporter: an MR of random data readable and writable by the peer, one channel, then follows the script */
struct exp_state {
    struct side sd;
    uint8_t *buf;
    uint64_t mr;
    int32_t lkey, rkey;
};

static void exp_open(struct exp_state *e)
{
    side_open(&e->sd);
    e->buf = aligned_alloc(4096, buf_size());
    fill_random(e->buf, buf_size(), BUF_SEED);
    OK(kvm_rdma_reg(e->sd.ctx, (uint64_t)(uintptr_t)e->buf, buf_size(),
                    KVM_RDMA_LOCAL_WRITE | KVM_RDMA_REMOTE_READ | KVM_RDMA_REMOTE_WRITE, 0, &e->mr, &e->lkey,
                    &e->rkey));
}

static void exp_close(struct exp_state *e)
{
    OK(kvm_rdma_dereg(e->mr));
    OK(kvm_rdma_close(e->sd.ctx));
    free(e->buf);
    expect_live_zero();
}

struct imp_state {
    struct side sd;
    uint8_t *buf;
    uint64_t mr;
    int32_t lkey, rkey;
};

static void imp_open(struct imp_state *m)
{
    side_open(&m->sd);
    m->buf = aligned_alloc(4096, buf_size());
    memset(m->buf, 0xEE, buf_size());
    OK(kvm_rdma_reg(m->sd.ctx, (uint64_t)(uintptr_t)m->buf, buf_size(), KVM_RDMA_LOCAL_WRITE, 0, &m->mr, &m->lkey,
                    &m->rkey));
}

static void imp_close(struct imp_state *m)
{
    OK(kvm_rdma_dereg(m->mr));
    OK(kvm_rdma_close(m->sd.ctx));
    free(m->buf);
    expect_live_zero();
}

/* Checks that the signaled completions of a post of count segments over nqp QPs are exactly one SUCCESS per run. */
static void check_runs(const struct wcs *w, int count, int nqp, uint64_t base, int wc_opcode)
{
    int runs = count < nqp ? count : nqp;
    CHECK(w->n == runs, "%d completions for %d segments on %d QPs, expected %d", w->n, count, nqp, runs);
    int seen[MAXQP] = {0};
    for (int k = 0; k < w->n; k++) {
        CHECK(w->status[k] == WC_SUCCESS, "completion %d: status %s", k, kvm_rdma_code_name(w->status[k], 1));
        CHECK(w->opcode[k] == wc_opcode, "completion %d: opcode %d, expected %d", k, w->opcode[k], wc_opcode);
        int q = w->qp[k];
        CHECK(q >= 0 && q < runs && !seen[q], "completion %d: qp index %d", k, q);
        seen[q] = 1;
        /* run q covers [start, start + n): its last segment's wr_id signals */
        int per = count / runs, extra = count % runs;
        int start = q * per + (q < extra ? q : extra), n = per + (q < extra ? 1 : 0);
        CHECK((uint64_t)w->wr_id[k] == base + (uint64_t)(start + n - 1), "QP %d completion wr_id %lld, expected %llu",
              q, (long long)w->wr_id[k], (unsigned long long)(base + (uint64_t)(start + n - 1)));
    }
}

/* --- read: byte-exact READ of NSEG random segments over 4 QPs, uneven splits, count < nqp, timeout --- */

static void read_exporter(int fd)
{
    struct exp_state e;
    exp_open(&e);
    struct peer_info rp;
    uint64_t ch = channel_up(&e.sd, fd, NQP, SQ, RQ, KVM_RDMA_REMOTE_READ | KVM_RDMA_REMOTE_WRITE,
                             (uint64_t)(uintptr_t)e.buf, buf_size(), e.rkey, &rp, 14, 7);
    CHECK(hear(fd) == 1, "script");
    OK(kvm_rdma_channel_destroy(ch));
    exp_close(&e);
}

static void read_importer(int fd)
{
    struct imp_state m;
    imp_open(&m);
    struct peer_info rp;
    uint64_t ch = channel_up(&m.sd, fd, NQP, SQ, RQ, KVM_RDMA_REMOTE_READ, (uint64_t)(uintptr_t)m.buf, buf_size(),
                             m.rkey, &rp, 14, 7);
    uint8_t *expect = malloc(buf_size());
    fill_random(expect, buf_size(), BUF_SEED);
    int64_t *loff = malloc(sizeof(int64_t) * NSEG), *roff = malloc(sizeof(int64_t) * NSEG),
            *len = malloc(sizeof(int64_t) * NSEG);
    int64_t total = make_segments(NSEG, MAXSEG, SEG_SEED, loff, roff, len);
    CHECK((size_t)total <= buf_size(), "layout");
    static struct wcs w;

    int64_t t0 = now_ms();
    int rc = kvm_rdma_post(ch, KVM_RDMA_OP_READ, 1000000, (uint64_t)(uintptr_t)m.buf, m.lkey, rp.addr, rp.rkey, loff,
                           roff, len, NSEG, 0);
    CHECK(rc == NQP, "post returned %d, expected %d", rc, NQP);
    collect(ch, &w, NQP, 20000);
    expect_quiet(ch, 30); /* and nothing more */
    check_runs(&w, NSEG, NQP, 1000000, KVM_RDMA_WC_RDMA_READ);
    int64_t dt = now_ms() - t0;
    for (int i = 0; i < NSEG; i++)
        CHECK(memcmp(m.buf + loff[i], expect + roff[i], (size_t)len[i]) == 0, "segment %d (%lld bytes) differs", i,
              (long long)len[i]);
    for (size_t b = (size_t)total; b < buf_size(); b++)
        CHECK(m.buf[b] == 0xEE, "byte %zu beyond the segments was written", b);
    note("READ of %d segments (%lld bytes) over %d QPs: byte-exact, %d signaled completions, %lld ms", NSEG,
         (long long)total, NQP, w.n, (long long)dt);

    /* uneven split (3,3,2,2) and count < nqp; the remote side reads from a shifted base */
    int counts[] = {10, 3, 1, 5, 7};
    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
        int cnt = counts[c];
        memset(m.buf, 0xEE, buf_size());
        uint64_t rbase = rp.addr + 4096 * (c + 1);
        rc = kvm_rdma_post(ch, KVM_RDMA_OP_READ, 77 * c, (uint64_t)(uintptr_t)m.buf, m.lkey, rbase, rp.rkey, loff,
                           roff, len, cnt, 0);
        CHECK(rc == (cnt < NQP ? cnt : NQP), "post of %d returned %d", cnt, rc);
        collect(ch, &w, rc, 300);
        expect_quiet(ch, 30); /* and nothing more */
        check_runs(&w, cnt, NQP, 77 * c, KVM_RDMA_WC_RDMA_READ);
        for (int i = 0; i < cnt; i++)
            CHECK(memcmp(m.buf + loff[i], expect + 4096 * (c + 1) + roff[i], (size_t)len[i]) == 0,
                  "count %d: segment %d differs", cnt, i);
    }
    note("READ uneven splits 10/3/1/5/7 over %d QPs: right runs, wr_ids and bytes", NQP);

    /* nothing outstanding: poll times out, immediately for 0 ms and after ~the timeout otherwise */
    expect_quiet(ch, 0);
    expect_quiet(ch, 150);
    note("poll with nothing outstanding: KVM_RDMA_ETIMEDOUT after 0 ms and 150 ms");
    say(fd, 1);
    OK(kvm_rdma_channel_destroy(ch));
    free(expect);
    free(loff);
    free(roff);
    free(len);
    imp_close(&m);
}

/* --- write: WRITE and WRITE_WITH_IMM; the exporter posts receives and sees RECV_RDMA_WITH_IMM with imm --- */

#define WCOUNT 1000
#define WMAX 3000

static void write_exporter(int fd)
{
    struct exp_state e;
    exp_open(&e);
    struct peer_info rp;
    uint64_t ch = channel_up(&e.sd, fd, NQP, SQ, RQ, KVM_RDMA_REMOTE_READ | KVM_RDMA_REMOTE_WRITE,
                             (uint64_t)(uintptr_t)e.buf, buf_size(), e.rkey, &rp, 14, 7);
    int64_t *loff = malloc(sizeof(int64_t) * WCOUNT), *roff = malloc(sizeof(int64_t) * WCOUNT),
            *len = malloc(sizeof(int64_t) * WCOUNT);
    int64_t total = make_segments(WCOUNT, WMAX, WSEG_SEED, loff, roff, len);
    uint8_t *src = malloc(buf_size());
    fill_random(src, buf_size(), WDATA_SEED);
    static struct wcs w;

    /* plain WRITE: no completion here, the data lands */
    CHECK(hear(fd) == 10, "script");
    for (int i = 0; i < WCOUNT; i++)
        CHECK(memcmp(e.buf + roff[i], src + loff[i], (size_t)len[i]) == 0, "WRITE segment %d differs", i);
    expect_quiet(ch, 0);
    note("WRITE of %d segments (%lld bytes): landed byte-exact, no receive completion", WCOUNT, (long long)total);

    /* WRITE WITH IMM: receives first (one per QP: recv i goes to QP i % nqp), then tell the importer */
    fill_random(e.buf, buf_size(), BUF_SEED);
    OK(kvm_rdma_post_recv(ch, 5000, NQP));
    OK(kvm_rdma_post_recv(ch, 6000, NQP)); /* spares, flushed at the end */
    say(fd, 11);
    collect(ch, &w, NQP, 20000);
    expect_quiet(ch, 30); /* and nothing more */
    CHECK(w.n == NQP, "%d receive completions, expected %d", w.n, NQP);
    int seen[NQP] = {0};
    int per = WCOUNT / NQP;
    for (int k = 0; k < w.n; k++) {
        CHECK(w.status[k] == WC_SUCCESS, "receive %d: %s", k, kvm_rdma_code_name(w.status[k], 1));
        CHECK(w.opcode[k] == KVM_RDMA_WC_RECV_RDMA_WITH_IMM, "receive %d: opcode %d", k, w.opcode[k]);
        CHECK(w.imm[k] == IMM_VALUE, "receive %d: imm 0x%08x, expected 0x%08x", k, (unsigned)w.imm[k],
              (unsigned)IMM_VALUE);
        int q = w.qp[k];
        CHECK(q >= 0 && q < NQP && !seen[q], "receive %d: qp index %d", k, q);
        seen[q] = 1;
        CHECK(w.wr_id[k] == 5000 + q, "receive on QP %d has wr_id %lld, expected %d", q, (long long)w.wr_id[k],
              5000 + q);
        int last = q * per + per - 1; /* WCOUNT divides evenly */
        CHECK(w.byte_len[k] == (int32_t)len[last], "receive on QP %d: byte_len %d, expected %lld (the WRITE WITH IMM)",
              q, w.byte_len[k], (long long)len[last]);
    }
    for (int i = 0; i < WCOUNT; i++)
        CHECK(memcmp(e.buf + roff[i], src + loff[i], (size_t)len[i]) == 0, "WRITE_WITH_IMM segment %d differs", i);
    note("WRITE_WITH_IMM: %d RECV_RDMA_WITH_IMM completions, imm 0x%08x in host order, data byte-exact", w.n,
         (unsigned)w.imm[0]);
    say(fd, 12);

    /* the spare receives flush when the channel fails */
    CHECK(hear(fd) == 13, "script");
    OK(kvm_rdma_channel_fail(ch));
    collect(ch, &w, NQP, 5000);
    expect_quiet(ch, 30); /* and nothing more */
    CHECK(w.n == NQP, "%d flushed receives, expected %d", w.n, NQP);
    for (int k = 0; k < w.n; k++)
        CHECK(w.status[k] == WC_WR_FLUSH_ERR && w.wr_id[k] == 6000 + w.qp[k], "flushed receive %d: %s wr_id %lld", k,
              kvm_rdma_code_name(w.status[k], 1), (long long)w.wr_id[k]);
    int rc = kvm_rdma_post_recv(ch, 0, 1);
    CHECK(rc == KVM_RDMA_ESTATE, "post_recv after fail = %d", rc);
    note("after kvm_rdma_channel_fail: %d posted receives flushed (WR_FLUSH_ERR), post_recv is ESTATE", w.n);
    say(fd, 14);
    OK(kvm_rdma_channel_destroy(ch));
    free(loff);
    free(roff);
    free(len);
    free(src);
    exp_close(&e);
}

static void write_importer(int fd)
{
    struct imp_state m;
    imp_open(&m);
    struct peer_info rp;
    uint64_t ch = channel_up(&m.sd, fd, NQP, SQ, RQ, KVM_RDMA_REMOTE_READ, (uint64_t)(uintptr_t)m.buf, buf_size(),
                             m.rkey, &rp, 14, 7);
    int64_t *loff = malloc(sizeof(int64_t) * WCOUNT), *roff = malloc(sizeof(int64_t) * WCOUNT),
            *len = malloc(sizeof(int64_t) * WCOUNT);
    make_segments(WCOUNT, WMAX, WSEG_SEED, loff, roff, len);
    fill_random(m.buf, buf_size(), WDATA_SEED);
    static struct wcs w;

    int rc = kvm_rdma_post(ch, KVM_RDMA_OP_WRITE, 100, (uint64_t)(uintptr_t)m.buf, m.lkey, rp.addr, rp.rkey, loff,
                           roff, len, WCOUNT, 0);
    CHECK(rc == NQP, "post WRITE = %d", rc);
    collect(ch, &w, NQP, 20000);
    expect_quiet(ch, 30); /* and nothing more */
    check_runs(&w, WCOUNT, NQP, 100, KVM_RDMA_WC_RDMA_WRITE);
    say(fd, 10);

    CHECK(hear(fd) == 11, "script");
    rc = kvm_rdma_post(ch, KVM_RDMA_OP_WRITE_WITH_IMM, 200, (uint64_t)(uintptr_t)m.buf, m.lkey, rp.addr, rp.rkey,
                       loff, roff, len, WCOUNT, IMM_VALUE);
    CHECK(rc == NQP, "post WRITE_WITH_IMM = %d", rc);
    collect(ch, &w, NQP, 20000);
    expect_quiet(ch, 30); /* and nothing more */
    check_runs(&w, WCOUNT, NQP, 200, KVM_RDMA_WC_RDMA_WRITE);
    for (int k = 0; k < w.n; k++)
        CHECK(w.imm[k] == 0, "send completion with imm %d", w.imm[k]);
    CHECK(hear(fd) == 12, "script");
    say(fd, 13);
    CHECK(hear(fd) == 14, "script");
    OK(kvm_rdma_channel_destroy(ch));
    free(loff);
    free(roff);
    free(len);
    imp_close(&m);
}

/* --- badrkey: READ with a wrong rkey -> REM_ACCESS_ERR on each QP, the rest of its run flushed --- */

static void idle_exporter(int fd)
{
    struct exp_state e;
    exp_open(&e);
    struct peer_info rp;
    uint64_t ch = channel_up(&e.sd, fd, NQP, SQ, RQ, KVM_RDMA_REMOTE_READ | KVM_RDMA_REMOTE_WRITE,
                             (uint64_t)(uintptr_t)e.buf, buf_size(), e.rkey, &rp, 14, 7);
    CHECK(hear(fd) == 99, "script");
    OK(kvm_rdma_channel_destroy(ch));
    exp_close(&e);
}

/* Every wr_id of [base, base + count) completes once; per QP the first completion is first_status, the rest flush. */
static void check_error_runs(const struct wcs *w, int count, uint64_t base, int first_status)
{
    CHECK(w->n == count, "%d completions for %d WRs in error, expected one each", w->n, count);
    static char seen[4096];
    memset(seen, 0, sizeof seen);
    int firsts[MAXQP], nfirst = 0;
    for (int q = 0; q < MAXQP; q++)
        firsts[q] = 0;
    for (int k = 0; k < w->n; k++) {
        int64_t i = w->wr_id[k] - (int64_t)base;
        CHECK(i >= 0 && i < count && !seen[i], "completion %d: wr_id %lld", k, (long long)w->wr_id[k]);
        seen[i] = 1;
        int q = w->qp[k];
        CHECK(q >= 0 && q < NQP, "qp index %d", q);
        if (!firsts[q]) {
            firsts[q] = 1;
            nfirst++;
            CHECK(w->status[k] == first_status, "first completion on QP %d: %s, expected %s", q,
                  kvm_rdma_code_name(w->status[k], 1), kvm_rdma_code_name(first_status, 1));
        } else {
            CHECK(w->status[k] == WC_WR_FLUSH_ERR, "later completion on QP %d: %s, expected flush", q,
                  kvm_rdma_code_name(w->status[k], 1));
        }
    }
    CHECK(nfirst == (count < NQP ? count : NQP), "%d QPs reported", nfirst);
}

static void badrkey_importer(int fd)
{
    struct imp_state m;
    imp_open(&m);
    struct peer_info rp;
    uint64_t ch = channel_up(&m.sd, fd, NQP, SQ, RQ, KVM_RDMA_REMOTE_READ, (uint64_t)(uintptr_t)m.buf, buf_size(),
                             m.rkey, &rp, 14, 7);
    int64_t loff[40], roff[40], len[40];
    make_segments(40, 1000, 4242, loff, roff, len);
    static struct wcs w;
    int rc = kvm_rdma_post(ch, KVM_RDMA_OP_READ, 300, (uint64_t)(uintptr_t)m.buf, m.lkey, rp.addr, rp.rkey ^ 0x5a5a,
                           loff, roff, len, 40, 0);
    CHECK(rc == NQP, "post = %d", rc);
    collect(ch, &w, 40, 10000);
    expect_quiet(ch, 30); /* and nothing more */
    check_error_runs(&w, 40, 300, WC_REM_ACCESS_ERR);
    expect_quiet(ch, 50);
    note("READ with a wrong rkey: REM_ACCESS_ERR first on each of %d QPs, the other %d WRs flushed", NQP, 40 - NQP);
    say(fd, 99);
    OK(kvm_rdma_channel_destroy(ch)); /* channel in error, events taken: destroy acks them */
    imp_close(&m);
}

/* --- failflush (KVM_FAKE_VERBS_DELAY_US set): fail a channel with READs in flight: every WR completes or flushes --- */

static void failflush_importer(int fd)
{
    struct imp_state m;
    imp_open(&m);
    struct peer_info rp;
    uint64_t ch = channel_up(&m.sd, fd, NQP, SQ, RQ, KVM_RDMA_REMOTE_READ, (uint64_t)(uintptr_t)m.buf, buf_size(),
                             m.rkey, &rp, 14, 7);
    enum { N = 200 };
    int64_t loff[N], roff[N], len[N];
    make_segments(N, 1000, 777, loff, roff, len);
    static struct wcs w;
    int rc = kvm_rdma_post(ch, KVM_RDMA_OP_READ, 400, (uint64_t)(uintptr_t)m.buf, m.lkey, rp.addr, rp.rkey, loff,
                           roff, len, N, 0);
    CHECK(rc == NQP, "post = %d", rc);
    OK(kvm_rdma_channel_fail(ch));
    collect(ch, &w, N, 10000);
    expect_quiet(ch, 30); /* and nothing more */
    /* per QP: a suffix of its run flushed (unsignaled WRs done before the failure leave no completion), or the
     * run's signaled last WR succeeded alone */
    int per = N / NQP, flushed = 0;
    for (int q = 0; q < NQP; q++) {
        int64_t first = -1, last = -1, cnt = 0, ok = 0;
        for (int k = 0; k < w.n; k++) {
            if (w.qp[k] != q)
                continue;
            int64_t i = w.wr_id[k] - 400;
            CHECK(i >= q * per && i < (q + 1) * per, "QP %d completion wr_id %lld outside its run", q,
                  (long long)w.wr_id[k]);
            CHECK(last < 0 || i == last + 1, "QP %d completions out of order (%lld after %lld)", q, (long long)i,
                  (long long)last);
            if (first < 0)
                first = i;
            last = i;
            cnt++;
            if (w.status[k] == WC_SUCCESS)
                ok++;
            else
                CHECK(w.status[k] == WC_WR_FLUSH_ERR, "QP %d: %s", q, kvm_rdma_code_name(w.status[k], 1));
        }
        CHECK(last == (q + 1) * per - 1, "QP %d: the run's last WR has no completion", q);
        CHECK(ok == 0 || cnt == 1, "QP %d: a success among flushes", q);
        flushed += (int)(cnt - ok);
    }
    CHECK(flushed > 0, "nothing was in flight when the channel failed (is KVM_FAKE_VERBS_DELAY_US set?)");
    expect_quiet(ch, 50);
    int64_t off0 = 0, len0 = 1;
    rc = kvm_rdma_post(ch, KVM_RDMA_OP_READ, 0, (uint64_t)(uintptr_t)m.buf, m.lkey, rp.addr, rp.rkey, &off0, &off0,
                       &len0, 1, 0);
    CHECK(rc == KVM_RDMA_ESTATE, "post after fail = %d", rc);
    note("kvm_rdma_channel_fail with %d READs in flight: %d flushed, the rest completed, post after it ESTATE", N,
         flushed);
    say(fd, 99);
    OK(kvm_rdma_channel_destroy(ch));
    imp_close(&m);
}

/* --- einval: bad post arguments are refused before anything is posted --- */

static void einval_importer(int fd)
{
    struct imp_state m;
    imp_open(&m);
    struct peer_info rp;
    uint64_t ch = channel_up(&m.sd, fd, NQP, 8, 4, KVM_RDMA_REMOTE_READ, (uint64_t)(uintptr_t)m.buf, buf_size(),
                             m.rkey, &rp, 14, 7);
    int64_t loff[40], roff[40], len[40];
    make_segments(40, 100, 99, loff, roff, len);
    uint64_t lb = (uint64_t)(uintptr_t)m.buf;
    int rc;
#define EXPECT_EINVAL(call, what)                                                                                      \
    do {                                                                                                               \
        rc = (call);                                                                                                   \
        CHECK(rc == KVM_RDMA_EINVAL, "%s: post returned %d", what, rc);                                                \
        CHECK(strstr(kvm_rdma_error_string(), "kvm_rdma_post") != NULL, "%s: error string \"%s\"", what,            \
              kvm_rdma_error_string());                                                                                \
    } while (0)
    EXPECT_EINVAL(kvm_rdma_post(ch, 3, 0, lb, m.lkey, rp.addr, rp.rkey, loff, roff, len, 10, 0), "op 3");
    EXPECT_EINVAL(kvm_rdma_post(ch, -1, 0, lb, m.lkey, rp.addr, rp.rkey, loff, roff, len, 10, 0), "op -1");
    EXPECT_EINVAL(kvm_rdma_post(ch, 0, 0, lb, m.lkey, rp.addr, rp.rkey, loff, roff, len, 0, 0), "count 0");
    EXPECT_EINVAL(kvm_rdma_post(ch, 0, 0, lb, m.lkey, rp.addr, rp.rkey, loff, roff, len, -5, 0), "count -5");
    EXPECT_EINVAL(kvm_rdma_post(ch, 0, 0, lb, m.lkey, rp.addr, rp.rkey, NULL, roff, len, 10, 0), "null local_off");
    /* one bad segment late in the list: the earlier runs must not have been posted */
    int64_t save;
    save = loff[9], loff[9] = -1;
    EXPECT_EINVAL(kvm_rdma_post(ch, 0, 0, lb, m.lkey, rp.addr, rp.rkey, loff, roff, len, 10, 0), "negative local off");
    loff[9] = save;
    save = roff[9], roff[9] = -4096;
    EXPECT_EINVAL(kvm_rdma_post(ch, 0, 0, lb, m.lkey, rp.addr, rp.rkey, loff, roff, len, 10, 0), "negative remote off");
    roff[9] = save;
    save = len[9], len[9] = -1;
    EXPECT_EINVAL(kvm_rdma_post(ch, 0, 0, lb, m.lkey, rp.addr, rp.rkey, loff, roff, len, 10, 0), "negative len");
    len[9] = 2147483648LL;
    EXPECT_EINVAL(kvm_rdma_post(ch, 0, 0, lb, m.lkey, rp.addr, rp.rkey, loff, roff, len, 10, 0), "len 2^31");
    len[9] = save;
    roff[9] = INT64_MAX - 10;
    EXPECT_EINVAL(kvm_rdma_post(ch, 0, 0, lb, m.lkey, UINT64_MAX - (1ull << 62), rp.rkey, loff, roff, len, 10, 0),
                  "remote address overflow");
    roff[9] = 0;
    EXPECT_EINVAL(kvm_rdma_post(ch, 1, 0, UINT64_MAX - 50, m.lkey, rp.addr, rp.rkey, loff, roff, len, 10, 0),
                  "local address overflow");
    /* 40 segments on 4 QPs are runs of 10, over sq_depth 8 */
    EXPECT_EINVAL(kvm_rdma_post(ch, 0, 0, lb, m.lkey, rp.addr, rp.rkey, loff, roff, len, 40, 0), "run > sq_depth");
    expect_quiet(ch, 200); /* nothing was posted by any of them */
    /* ... and the channel still works: 32 segments = runs of 8 */
    for (int i = 0; i < 40; i++)
        roff[i] = loff[i];
    rc = kvm_rdma_post(ch, 0, 500, lb, m.lkey, rp.addr, rp.rkey, loff, roff, len, 32, 0);
    CHECK(rc == NQP, "valid post = %d", rc);
    static struct wcs w;
    collect(ch, &w, NQP, 5000);
    expect_quiet(ch, 30); /* and nothing more */
    check_runs(&w, 32, NQP, 500, KVM_RDMA_WC_RDMA_READ);
    /* post_recv arguments */
    rc = kvm_rdma_post_recv(ch, 0, 0);
    CHECK(rc == KVM_RDMA_EINVAL, "post_recv(0) = %d", rc);
    rc = kvm_rdma_post_recv(ch, 0, NQP * 4 + 1);
    CHECK(rc == KVM_RDMA_EINVAL, "post_recv over rq_depth = %d", rc);
    int64_t wid;
    int32_t x;
    rc = kvm_rdma_poll(ch, 0, 0, &wid, &x, &x, &x, &x, &x);
    CHECK(rc == KVM_RDMA_EINVAL, "poll max 0 = %d", rc);
    rc = kvm_rdma_channel_connect(ch, rp.qpn, rp.gid, rp.lid, rp.psn, rp.psn, 3, 16, 14, 7, 7);
    CHECK(rc == KVM_RDMA_ESTATE, "second connect = %d", rc);
    note("bad post arguments (op, count, null array, negative off/len, len 2^31, address overflow, run > sq_depth): "
         "KVM_RDMA_EINVAL with nothing posted; a valid post after them works");

    /* a post that overruns the send queue: one WR per QP left unpolled, then runs of 8 on 8-deep queues. QP 0 takes
     * 7 of its 8 (bad_wr 7 = segment 7), the later runs are not posted; the caller fails and drains the channel. */
    rc = kvm_rdma_post(ch, 0, 700, lb, m.lkey, rp.addr, rp.rkey, loff, roff, len, NQP, 0);
    CHECK(rc == NQP, "post = %d", rc);
    rc = kvm_rdma_post(ch, 0, 800, lb, m.lkey, rp.addr, rp.rkey, loff, roff, len, 32, 0);
    CHECK(rc < -KVM_RDMA_ERRNO_BASE, "overrunning post = %d", rc);
    const char *es = kvm_rdma_error_string();
    CHECK(strstr(es, "ibv_post_send") && strstr(es, "QP 0 ") && strstr(es, "bad_wr 7 ") && strstr(es, "segment 7;"),
          "error string \"%s\"", es);
    note("overrunning post: %d (%s): \"%s\"", rc, kvm_rdma_code_name(rc, 0), es);
    OK(kvm_rdma_channel_fail(ch));
    collect(ch, &w, 4096, 300); /* until quiet */
    int got_first = 0;
    for (int k = 0; k < w.n; k++) {
        CHECK(w.wr_id[k] >= 700 && w.wr_id[k] < 807, "wr_id %lld was not posted", (long long)w.wr_id[k]);
        got_first += w.wr_id[k] < 704;
        CHECK(w.wr_id[k] < 800 || w.qp[k] == 0, "wr_id %lld on QP %d", (long long)w.wr_id[k], w.qp[k]);
    }
    CHECK(got_first == NQP, "%d completions of the first post", got_first);
    say(fd, 99);
    OK(kvm_rdma_channel_destroy(ch));
    imp_close(&m);
}

/* --- deadpeer: the exporter process dies; READs end in RETRY_EXC_ERR then flush --- */

static void dead_exporter(int fd)
{
    struct exp_state e;
    exp_open(&e);
    struct peer_info rp;
    channel_up(&e.sd, fd, NQP, SQ, RQ, KVM_RDMA_REMOTE_READ, (uint64_t)(uintptr_t)e.buf, buf_size(), e.rkey, &rp, 8,
               2);
    CHECK(hear(fd) == 98, "script");
    _exit(0); /* dies with everything open */
}

static void dead_importer(int fd)
{
    struct imp_state m;
    imp_open(&m);
    struct peer_info rp;
    uint64_t ch = channel_up(&m.sd, fd, NQP, SQ, RQ, KVM_RDMA_REMOTE_READ, (uint64_t)(uintptr_t)m.buf, buf_size(),
                             m.rkey, &rp, 8, 2);
    say(fd, 98);
    char c;
    CHECK(read(fd, &c, 1) == 0, "expected the exporter to close");
    usleep(100000);
    int64_t loff[20], roff[20], len[20];
    make_segments(20, 500, 31, loff, roff, len);
    int rc = kvm_rdma_post(ch, KVM_RDMA_OP_READ, 600, (uint64_t)(uintptr_t)m.buf, m.lkey, rp.addr, rp.rkey, loff,
                           roff, len, 20, 0);
    if (rc < 0) {
        note("post to a dead peer failed at post time: %d (%s)", rc, kvm_rdma_error_string());
    } else {
        static struct wcs w;
        collect(ch, &w, 20, 15000);
        expect_quiet(ch, 30); /* and nothing more */
        check_error_runs(&w, 20, 600, WC_RETRY_EXC_ERR);
        note("READ from a dead peer: RETRY_EXC_ERR first on each QP, the rest flushed");
    }
    OK(kvm_rdma_channel_destroy(ch));
    imp_close(&m);
}

/* --- threads: 4 channels, each driven by its own thread concurrently --- */

#define TCH 4
struct tjob {
    uint64_t ch;
    struct imp_state *m;
    struct peer_info rp;
    int idx;
    const uint8_t *expect;
    int fail;
};

static void *thread_reader(void *arg)
{
    struct tjob *j = arg;
    enum { N = 256 };
    int64_t loff[N], roff[N], len[N];
    struct wcs *wp = malloc(sizeof *wp);
    for (int iter = 0; iter < 20 && !j->fail; iter++) {
        make_segments(N, 512, 1000 + (uint64_t)j->idx * 100 + (uint64_t)iter, loff, roff, len);
        /* each thread owns a quarter of the local buffer */
        int64_t lbase = (int64_t)j->idx * (int64_t)(buf_size() / TCH);
        int rc = kvm_rdma_post(j->ch, KVM_RDMA_OP_READ, 10000 * (uint64_t)iter, (uint64_t)(uintptr_t)j->m->buf + (uint64_t)lbase,
                               j->m->lkey, j->rp.addr, j->rp.rkey, loff, roff, len, N, 0);
        if (rc != NQP) {
            j->fail = 1;
            break;
        }
        collect(j->ch, wp, NQP, 10000);
        for (int k = 0; k < wp->n; k++)
            if (wp->status[k] != WC_SUCCESS)
                j->fail = 2;
        if (wp->n != NQP)
            j->fail = 3;
        if (j->fail)
            note("thread %d, READ %d: %d completions (%d expected), the first %s", j->idx, iter, wp->n, NQP,
                 wp->n > 0 ? kvm_rdma_code_name(wp->status[0], 1) : "-");
        for (int i = 0; i < N && !j->fail; i++)
            if (memcmp(j->m->buf + lbase + loff[i], j->expect + roff[i], (size_t)len[i]) != 0)
                j->fail = 4;
    }
    free(wp);
    return NULL;
}

static void threads_exporter(int fd)
{
    struct exp_state e;
    exp_open(&e);
    uint64_t ch[TCH];
    struct peer_info rp;
    for (int t = 0; t < TCH; t++)
        ch[t] = channel_up(&e.sd, fd, NQP, 512, 0, KVM_RDMA_REMOTE_READ, (uint64_t)(uintptr_t)e.buf, buf_size(),
                           e.rkey, &rp, 14, 7);
    CHECK(hear(fd) == 99, "script");
    for (int t = 0; t < TCH; t++)
        OK(kvm_rdma_channel_destroy(ch[t]));
    exp_close(&e);
}

static void threads_importer(int fd)
{
    struct imp_state m;
    imp_open(&m);
    uint8_t *expect = malloc(buf_size());
    fill_random(expect, buf_size(), BUF_SEED);
    struct tjob jobs[TCH];
    pthread_t th[TCH];
    for (int t = 0; t < TCH; t++) {
        memset(&jobs[t], 0, sizeof jobs[t]);
        jobs[t].ch = channel_up(&m.sd, fd, NQP, 512, 0, KVM_RDMA_REMOTE_READ, (uint64_t)(uintptr_t)m.buf, buf_size(),
                                m.rkey, &jobs[t].rp, 14, 7);
        jobs[t].m = &m;
        jobs[t].idx = t;
        jobs[t].expect = expect;
    }
    for (int t = 0; t < TCH; t++)
        CHECK(pthread_create(&th[t], NULL, thread_reader, &jobs[t]) == 0, "pthread_create");
    for (int t = 0; t < TCH; t++) {
        pthread_join(th[t], NULL);
        CHECK(jobs[t].fail == 0, "thread %d failed (%d)", t, jobs[t].fail);
    }
    note("%d threads, one channel each, 20 x 256-segment READs each concurrently: all byte-exact", TCH);
    say(fd, 99);
    for (int t = 0; t < TCH; t++)
        OK(kvm_rdma_channel_destroy(jobs[t].ch));
    free(expect);
    imp_close(&m);
}

/* ---- driver ---------------------------------------------------------------------------------------------------- */

struct scenario {
    const char *name;
    const char *env; /* "NAME=value" set for the scenario's process, or NULL */
    int needs_fake;
    int (*one)(void);
    role_fn exporter, importer;
};

static const struct scenario scenarios[] = {
    {"nodevice", NULL, 0, sc_nodevice, NULL, NULL},
    {"fake-nodevice", "KVM_FAKE_VERBS_DEVICES=0", 1, sc_nodevice, NULL, NULL},
    {"portdown", "KVM_FAKE_VERBS_PORT_STATE=down", 1, sc_portdown, NULL, NULL},
    {"probe", NULL, 1, sc_probe, NULL, NULL},
    {"read", NULL, 1, NULL, read_exporter, read_importer},
    {"write", NULL, 1, NULL, write_exporter, write_importer},
    {"badrkey", NULL, 1, NULL, idle_exporter, badrkey_importer},
    {"failflush", "KVM_FAKE_VERBS_DELAY_US=2000", 1, NULL, idle_exporter, failflush_importer},
    {"einval", NULL, 1, NULL, idle_exporter, einval_importer},
    {"deadpeer", NULL, 1, NULL, dead_exporter, dead_importer},
    {"threads", NULL, 1, NULL, threads_exporter, threads_importer},
};
#define NSCEN ((int)(sizeof scenarios / sizeof scenarios[0]))

static int run_one(const struct scenario *s)
{
    alarm(120);
    if (s->one)
        return s->one();
    return two_sided(s->exporter, s->importer);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    int fake = 0;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--fake") == 0)
            fake = 1;
        else if (strcmp(argv[i], "--scenario") == 0 && i + 1 < argc)
            only = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--fake] [--scenario NAME]\n", argv[0]);
            return 2;
        }
    }
    if (only) {
        for (int i = 0; i < NSCEN; i++)
            if (strcmp(scenarios[i].name, only) == 0)
                return run_one(&scenarios[i]);
        fprintf(stderr, "no scenario %s\n", only);
        return 2;
    }
    int failed = 0, ran = 0;
    for (int i = 0; i < NSCEN; i++) {
        const struct scenario *s = &scenarios[i];
        if (s->needs_fake != fake) {
            printf("SKIP %s (%s)\n", s->name, fake ? "needs the real library" : "needs the fake verbs provider");
            continue;
        }
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            if (s->env) {
                char kv[128];
                snprintf(kv, sizeof kv, "%s", s->env);
                char *eq = strchr(kv, '=');
                *eq = '\0';
                setenv(kv, eq + 1, 1);
            }
            execl("/proc/self/exe", argv[0], "--scenario", s->name, (char *)NULL);
            perror("execl");
            _exit(127);
        }
        int st = 0;
        int64_t t0 = now_ms();
        waitpid(pid, &st, 0);
        int ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
        printf("%s %s%s%s (%lld ms)\n", ok ? "PASS" : "FAIL", s->name, s->env ? " " : "", s->env ? s->env : "",
               (long long)(now_ms() - t0));
        ran++;
        failed += !ok;
    }
    printf("%d of %d scenarios passed\n", ran - failed, ran);
    return failed ? 1 : 0;
}
