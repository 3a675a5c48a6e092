/*
 * fake_verbs_selftest.c - checks the fake verbs provider (fake_verbs.c) against the verbs man pages. Linked against
 * the REAL libibverbs (-libverbs) and run with LD_LIBRARY_PATH pointing at the fake's libibverbs.so.1:
 *
 *   gcc -O1 -g -Wall -Wextra -Werror -pthread -o OUT/fake_verbs_selftest fake_verbs_selftest.c -libverbs
 *   LD_LIBRARY_PATH=OUT OUT/fake_verbs_selftest
 *
 * Every check is named; the first failure prints FAIL and exits 1. Exit 0 when all passed.
 */
#define _GNU_SOURCE
#include <infiniband/verbs.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int g_checks;

#define CHECK(name, cond)                                                                                          \
    do {                                                                                                           \
        if (!(cond)) {                                                                                             \
            fprintf(stderr, "FAIL %s  (%s:%d: %s; errno %d %s)\n", name, __FILE__, __LINE__, #cond, errno,        \
                    strerror(errno));                                                                              \
            exit(1);                                                                                               \
        }                                                                                                          \
        g_checks++;                                                                                                \
    } while (0)

static void section(const char *s)
{
    printf("== %s\n", s);
    fflush(stdout);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
static void fill_random(void *p, size_t n, uint64_t seed)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    unsigned char *c = p;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        c[i] = (unsigned char)(s >> 24);
    }
}

/* polls until n completions arrived or timeout_ms passed; returns how many */
static int wait_wc(struct ibv_cq *cq, struct ibv_wc *wc, int n, int timeout_ms)
{
    int got = 0;
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    while (got < n) {
        int r = ibv_poll_cq(cq, n - got, wc + got);
        if (r < 0)
            return -1;
        got += r;
        if (got >= n || now_ms() > end)
            break;
        if (!r)
            usleep(200);
    }
    return got;
}

struct dev {
    struct ibv_context *ctx;
    struct ibv_pd *pd;
    union ibv_gid gid;
};

static void dev_open(struct dev *d)
{
    int n = -1;
    struct ibv_device **l = ibv_get_device_list(&n);
    CHECK("open: device list", l && n == 1);
    d->ctx = ibv_open_device(l[0]);
    ibv_free_device_list(l);
    CHECK("open: ibv_open_device", d->ctx);
    d->pd = ibv_alloc_pd(d->ctx);
    CHECK("open: ibv_alloc_pd", d->pd);
    CHECK("open: ibv_query_gid", ibv_query_gid(d->ctx, 1, 0, &d->gid) == 0);
}

static void dev_close(struct dev *d)
{
    CHECK("close: ibv_dealloc_pd", ibv_dealloc_pd(d->pd) == 0);
    CHECK("close: ibv_close_device", ibv_close_device(d->ctx) == 0);
}

static struct ibv_qp *qp_new(struct dev *d, struct ibv_cq *cq, int sq, int rq, int access)
{
    struct ibv_qp_init_attr ia;
    memset(&ia, 0, sizeof(ia));
    ia.send_cq = cq;
    ia.recv_cq = cq;
    ia.qp_type = IBV_QPT_RC;
    ia.cap.max_send_wr = (uint32_t)sq;
    ia.cap.max_recv_wr = (uint32_t)rq;
    ia.cap.max_send_sge = 1;
    ia.cap.max_recv_sge = 1;
    struct ibv_qp *qp = ibv_create_qp(d->pd, &ia);
    CHECK("qp: ibv_create_qp", qp);
    struct ibv_qp_attr a;
    memset(&a, 0, sizeof(a));
    a.qp_state = IBV_QPS_INIT;
    a.port_num = 1;
    a.pkey_index = 0;
    a.qp_access_flags = (unsigned)access;
    CHECK("qp: RESET->INIT",
          ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS) == 0);
    return qp;
}

static int to_rtr(struct ibv_qp *qp, uint32_t dqpn, const union ibv_gid *gid, int mask_drop)
{
    struct ibv_qp_attr a;
    memset(&a, 0, sizeof(a));
    a.qp_state = IBV_QPS_RTR;
    a.path_mtu = IBV_MTU_4096;
    a.dest_qp_num = dqpn;
    a.rq_psn = 0;
    a.max_dest_rd_atomic = 16;
    a.min_rnr_timer = 12;
    a.ah_attr.is_global = 1;
    a.ah_attr.grh.dgid = *gid;
    a.ah_attr.grh.sgid_index = 0;
    a.ah_attr.grh.hop_limit = 64;
    a.ah_attr.port_num = 1;
    int mask = IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
               IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER;
    return ibv_modify_qp(qp, &a, mask & ~mask_drop);
}

static int to_rts(struct ibv_qp *qp, int timeout, int retry, int rnr_retry, int mask_drop)
{
    struct ibv_qp_attr a;
    memset(&a, 0, sizeof(a));
    a.qp_state = IBV_QPS_RTS;
    a.sq_psn = 0;
    a.timeout = (uint8_t)timeout;
    a.retry_cnt = (uint8_t)retry;
    a.rnr_retry = (uint8_t)rnr_retry;
    a.max_rd_atomic = 16;
    int mask = IBV_QP_STATE | IBV_QP_SQ_PSN | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
               IBV_QP_MAX_QP_RD_ATOMIC;
    return ibv_modify_qp(qp, &a, mask & ~mask_drop);
}

static void qp_connect(struct ibv_qp *qp, uint32_t dqpn, const union ibv_gid *gid, int rnr_retry)
{
    CHECK("qp: INIT->RTR", to_rtr(qp, dqpn, gid, 0) == 0);
    CHECK("qp: RTR->RTS", to_rts(qp, 14, 7, rnr_retry, 0) == 0);
}

static int qp_state(struct ibv_qp *qp)
{
    struct ibv_qp_attr a;
    struct ibv_qp_init_attr ia;
    if (ibv_query_qp(qp, &a, IBV_QP_STATE, &ia))
        return -1;
    return a.qp_state;
}

static int set_state(struct ibv_qp *qp, enum ibv_qp_state s)
{
    struct ibv_qp_attr a;
    memset(&a, 0, sizeof(a));
    a.qp_state = s;
    return ibv_modify_qp(qp, &a, IBV_QP_STATE);
}

/* posts one RDMA WR (single SGE) */
static int post1(struct ibv_qp *qp, enum ibv_wr_opcode op, uint64_t wr_id, void *laddr, uint32_t len, uint32_t lkey,
                 uint64_t raddr, uint32_t rkey, int signaled, uint32_t imm_host)
{
    struct ibv_sge sge = {(uintptr_t)laddr, len, lkey};
    struct ibv_send_wr wr, *bad = NULL;
    memset(&wr, 0, sizeof(wr));
    wr.wr_id = wr_id;
    wr.opcode = op;
    wr.sg_list = &sge;
    wr.num_sge = 1;
    wr.send_flags = signaled ? IBV_SEND_SIGNALED : 0;
    wr.imm_data = htonl(imm_host);
    wr.wr.rdma.remote_addr = raddr;
    wr.wr.rdma.rkey = rkey;
    return ibv_post_send(qp, &wr, &bad);
}

static int post_recv1(struct ibv_qp *qp, uint64_t wr_id)
{
    struct ibv_recv_wr wr, *bad = NULL;
    memset(&wr, 0, sizeof(wr));
    wr.wr_id = wr_id;
    wr.num_sge = 0;
    return ibv_post_recv(qp, &wr, &bad);
}

static int count_tasks(void)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* Posts nseg WRs of random sizes covering [0, total) as ONE chained post; only the last signaled. */
static int post_segments(struct ibv_qp *qp, enum ibv_wr_opcode op, char *lbase, uint32_t lkey, uint64_t rbase,
                         uint32_t rkey, size_t total, int nseg, uint64_t wr_id_base)
{
    struct ibv_send_wr *wrs = calloc((size_t)nseg, sizeof(*wrs));
    struct ibv_sge *sges = calloc((size_t)nseg, sizeof(*sges));
    size_t off = 0;
    for (int i = 0; i < nseg; i++) {
        size_t len = i == nseg - 1 ? total - off : (total / (size_t)nseg) / 2 + rnd() % (total / (size_t)nseg);
        if (off + len > total)
            len = total - off;
        sges[i].addr = (uintptr_t)(lbase + off);
        sges[i].length = (uint32_t)len;
        sges[i].lkey = lkey;
        wrs[i].wr_id = wr_id_base + (uint64_t)i;
        wrs[i].opcode = op;
        wrs[i].sg_list = &sges[i];
        wrs[i].num_sge = 1;
        wrs[i].send_flags = i == nseg - 1 ? IBV_SEND_SIGNALED : 0;
        wrs[i].wr.rdma.remote_addr = rbase + off;
        wrs[i].wr.rdma.rkey = rkey;
        wrs[i].next = i == nseg - 1 ? NULL : &wrs[i + 1];
        off += len;
    }
    struct ibv_send_wr *bad = NULL;
    int rc = ibv_post_send(qp, wrs, &bad);
    /* the WRs are copied by post_send: scribbling over them now must not matter */
    memset(sges, 0xa5, (size_t)nseg * sizeof(*sges));
    free(wrs);
    free(sges);
    return rc;
}

/* ---------------------------------------------------------------------------------------------------------- */

static void test_devices(void)
{
    section("device list and env switches");
    int n = -1;
    setenv("KVM_FAKE_VERBS_DEVICES", "0", 1);
    struct ibv_device **l = ibv_get_device_list(&n);
    CHECK("devices: KVM_FAKE_VERBS_DEVICES=0 gives a non-NULL empty list", l && n == 0 && l[0] == NULL);
    ibv_free_device_list(l);
    unsetenv("KVM_FAKE_VERBS_DEVICES");
    l = ibv_get_device_list(&n);
    CHECK("devices: one device", l && n == 1 && l[0] && !l[1]);
    CHECK("devices: named kvmfake0", strcmp(ibv_get_device_name(l[0]), "kvmfake0") == 0);
    ibv_free_device_list(l);
}

static void test_port(void)
{
    section("port, device attributes, GID");
    struct dev d;
    dev_open(&d);
    struct ibv_port_attr pa;
    memset(&pa, 0x5a, sizeof(pa));
    CHECK("port: ibv_query_port (verbs.h macro path)", ibv_query_port(d.ctx, 1, &pa) == 0);
    CHECK("port: ACTIVE", pa.state == IBV_PORT_ACTIVE);
    CHECK("port: Ethernet", pa.link_layer == IBV_LINK_LAYER_ETHERNET);
    CHECK("port: active_mtu 4096", pa.active_mtu == IBV_MTU_4096);
    CHECK("port: lid 0", pa.lid == 0);
    CHECK("port: gid_tbl_len 1", pa.gid_tbl_len == 1);
    CHECK("port: port 2 invalid", ibv_query_port(d.ctx, 2, &pa) != 0);
    setenv("KVM_FAKE_VERBS_PORT_STATE", "down", 1);
    CHECK("port: PORT_STATE=down", ibv_query_port(d.ctx, 1, &pa) == 0 && pa.state == IBV_PORT_DOWN);
    unsetenv("KVM_FAKE_VERBS_PORT_STATE");
    struct ibv_device_attr da;
    CHECK("device: ibv_query_device", ibv_query_device(d.ctx, &da) == 0);
    CHECK("device: max_qp_rd_atom 16", da.max_qp_rd_atom == 16);
    CHECK("device: max_qp_wr 16384", da.max_qp_wr == 16384);
    CHECK("device: max_cqe 1<<20", da.max_cqe == 1 << 20);
    CHECK("device: max_sge 16", da.max_sge == 16);
    CHECK("device: one port", da.phys_port_cnt == 1);
    static const unsigned char zero[8];
    CHECK("gid: bytes 0..7 zero", memcmp(d.gid.raw, zero, 8) == 0);
    CHECK("gid: bytes 10..11 ff", d.gid.raw[10] == 0xff && d.gid.raw[11] == 0xff);
    CHECK("gid: KVM_FAKE_VERBS_IP in bytes 12..15",
          d.gid.raw[12] == 127 && d.gid.raw[13] == 0 && d.gid.raw[14] == 0 && d.gid.raw[15] == 1);
    union ibv_gid g1;
    errno = 0;
    CHECK("gid: index 1 invalid", ibv_query_gid(d.ctx, 1, 1, &g1) == -1 && errno == EINVAL);
    uint16_t port = (uint16_t)(d.gid.raw[8] << 8 | d.gid.raw[9]);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK("gid: bytes 8..9 are the listener's port", port && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    close(fd);
    struct dev d2;
    dev_open(&d2);
    CHECK("gid: one listener per process", memcmp(d.gid.raw, d2.gid.raw, 16) == 0);
    dev_close(&d2);
    dev_close(&d);
}

static void test_mr(void)
{
    section("memory registration");
    struct dev d;
    dev_open(&d);
    char *buf = malloc(4096);
    errno = 0;
    struct ibv_mr *mr = ibv_reg_mr(d.pd, buf, 4096, IBV_ACCESS_REMOTE_WRITE);
    CHECK("mr: REMOTE_WRITE without LOCAL_WRITE is EINVAL (man ibv_reg_mr)", !mr && errno == EINVAL);
    mr = ibv_reg_mr(d.pd, buf, 4096, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ);
    struct ibv_mr *mr2 = ibv_reg_mr(d.pd, buf, 4096, IBV_ACCESS_REMOTE_READ);
    CHECK("mr: registered", mr && mr2);
    CHECK("mr: keys non-zero and distinct",
          mr->lkey && mr->rkey && mr->lkey != mr->rkey && mr2->lkey != mr->lkey && mr2->rkey != mr->rkey &&
              mr2->lkey != mr->rkey && mr2->rkey != mr->lkey);
    CHECK("mr: fields", mr->addr == buf && mr->length == 4096 && mr->pd == d.pd && mr->context == d.ctx);
    errno = 0;
    CHECK("mr: dma-buf unsupported", !ibv_reg_dmabuf_mr(d.pd, 0, 4096, 0, 3, 0) && errno == EOPNOTSUPP);
    CHECK("ebusy: dealloc_pd with MRs", ibv_dealloc_pd(d.pd) == EBUSY);
    CHECK("mr: dereg", ibv_dereg_mr(mr) == 0 && ibv_dereg_mr(mr2) == 0);
    free(buf);
    dev_close(&d);
}

static void test_state_machine(void)
{
    section("QP state machine");
    struct dev d;
    dev_open(&d);
    struct ibv_cq *cq = ibv_create_cq(d.ctx, 64, NULL, NULL, 0);
    CHECK("cq: create", cq);
    struct ibv_qp_init_attr ia;
    memset(&ia, 0, sizeof(ia));
    ia.send_cq = cq;
    ia.recv_cq = cq;
    ia.qp_type = IBV_QPT_UD;
    ia.cap.max_send_wr = 4;
    ia.cap.max_send_sge = 1;
    errno = 0;
    CHECK("qp: UD is EINVAL", !ibv_create_qp(d.pd, &ia) && errno == EINVAL);
    ia.qp_type = IBV_QPT_RC;
    ia.cap.max_send_sge = 17;
    errno = 0;
    CHECK("qp: max_send_sge over the device limit is EINVAL", !ibv_create_qp(d.pd, &ia) && errno == EINVAL);
    ia.cap.max_send_sge = 1;
    ia.cap.max_send_wr = 16385;
    CHECK("qp: max_send_wr over the device limit is EINVAL", !ibv_create_qp(d.pd, &ia) && errno == EINVAL);
    ia.cap.max_send_wr = 4;
    struct ibv_qp *qp = ibv_create_qp(d.pd, &ia);
    CHECK("qp: RC created in RESET", qp && qp->qp_num && qp_state(qp) == IBV_QPS_RESET);
    char buf[64];
    struct ibv_mr *mr = ibv_reg_mr(d.pd, buf, sizeof(buf), IBV_ACCESS_LOCAL_WRITE);
    struct ibv_sge sge = {(uintptr_t)buf, 8, mr->lkey};
    struct ibv_send_wr wr, *bad = NULL;
    memset(&wr, 0, sizeof(wr));
    wr.opcode = IBV_WR_RDMA_WRITE;
    wr.sg_list = &sge;
    wr.num_sge = 1;
    CHECK("qp: post_send in RESET is EINVAL with bad_wr", ibv_post_send(qp, &wr, &bad) == EINVAL && bad == &wr);
    CHECK("qp: post_recv in RESET is EINVAL", post_recv1(qp, 1) == EINVAL);
    CHECK("qp: RESET->RTR is EINVAL", to_rtr(qp, 5, &d.gid, 0) == EINVAL);
    struct ibv_qp_attr a;
    memset(&a, 0, sizeof(a));
    a.qp_state = IBV_QPS_INIT;
    a.port_num = 1;
    CHECK("qp: RESET->INIT without ACCESS_FLAGS is EINVAL",
          ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT) == EINVAL);
    CHECK("qp: failed modify leaves RESET", qp_state(qp) == IBV_QPS_RESET);
    a.port_num = 2;
    CHECK("qp: RESET->INIT port 2 is EINVAL",
          ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS) == EINVAL);
    a.port_num = 1;
    CHECK("qp: RESET->INIT",
          ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS) == 0 &&
              qp_state(qp) == IBV_QPS_INIT);
    bad = NULL;
    CHECK("qp: post_send in INIT is EINVAL", ibv_post_send(qp, &wr, &bad) == EINVAL && bad == &wr);
    CHECK("qp: INIT->RTS is EINVAL", to_rts(qp, 14, 7, 7, 0) == EINVAL);
    CHECK("qp: INIT->RTR without MIN_RNR_TIMER is EINVAL", to_rtr(qp, 5, &d.gid, IBV_QP_MIN_RNR_TIMER) == EINVAL);
    CHECK("qp: INIT->RTR without AV is EINVAL", to_rtr(qp, 5, &d.gid, IBV_QP_AV) == EINVAL);
    CHECK("qp: INIT->RTR", to_rtr(qp, 5, &d.gid, 0) == 0 && qp_state(qp) == IBV_QPS_RTR);
    bad = NULL;
    CHECK("qp: post_send in RTR is EINVAL", ibv_post_send(qp, &wr, &bad) == EINVAL && bad == &wr);
    CHECK("qp: RTR->RTS without RNR_RETRY is EINVAL", to_rts(qp, 14, 7, 7, IBV_QP_RNR_RETRY) == EINVAL);
    CHECK("qp: RTR->RTS without MAX_QP_RD_ATOMIC is EINVAL", to_rts(qp, 14, 7, 7, IBV_QP_MAX_QP_RD_ATOMIC) == EINVAL);
    CHECK("qp: RTR->RTS", to_rts(qp, 14, 7, 7, 0) == 0 && qp_state(qp) == IBV_QPS_RTS);
    struct ibv_qp_init_attr qi;
    CHECK("qp: query_qp remembers attributes",
          ibv_query_qp(qp, &a, IBV_QP_STATE, &qi) == 0 && a.dest_qp_num == 5 && a.timeout == 14 &&
              a.retry_cnt == 7 && a.rnr_retry == 7 && a.max_rd_atomic == 16 &&
              memcmp(a.ah_attr.grh.dgid.raw, d.gid.raw, 16) == 0 && qi.qp_type == IBV_QPT_RC);
    CHECK("qp: RTS->RTR is EINVAL", to_rtr(qp, 5, &d.gid, 0) == EINVAL);
    CHECK("qp: RTS->ERR", set_state(qp, IBV_QPS_ERR) == 0 && qp_state(qp) == IBV_QPS_ERR);
    CHECK("qp: ERR->RESET", set_state(qp, IBV_QPS_RESET) == 0 && qp_state(qp) == IBV_QPS_RESET);
    CHECK("qp: RESET->ERR", set_state(qp, IBV_QPS_ERR) == 0);
    CHECK("qp: modify without STATE is EINVAL", ibv_modify_qp(qp, &a, IBV_QP_TIMEOUT) == EINVAL);
    CHECK("ebusy: destroy_cq with a QP", ibv_destroy_cq(cq) == EBUSY);
    CHECK("ebusy: dealloc_pd with a QP", ibv_dereg_mr(mr) == 0 && ibv_dealloc_pd(d.pd) == EBUSY);
    errno = 0;
    CHECK("ebusy: close_device with a PD", ibv_close_device(d.ctx) == -1 && errno == EBUSY);
    CHECK("qp: destroy", ibv_destroy_qp(qp) == 0);
    CHECK("cq: destroy", ibv_destroy_cq(cq) == 0);
    dev_close(&d);
}

/* Two QPs of one process connected to each other (a: requester, b: responder) */
struct pair {
    struct dev d;
    struct ibv_cq *cqa, *cqb;
    struct ibv_qp *a, *b;
};

static void pair_open(struct pair *p, int sq, int rq, int b_access, int rnr_retry)
{
    dev_open(&p->d);
    p->cqa = ibv_create_cq(p->d.ctx, 4096, NULL, NULL, 0);
    p->cqb = ibv_create_cq(p->d.ctx, 4096, NULL, NULL, 0);
    CHECK("pair: CQs", p->cqa && p->cqb);
    p->a = qp_new(&p->d, p->cqa, sq, rq, IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE);
    p->b = qp_new(&p->d, p->cqb, sq, rq, b_access);
    qp_connect(p->a, p->b->qp_num, &p->d.gid, rnr_retry);
    qp_connect(p->b, p->a->qp_num, &p->d.gid, rnr_retry);
}

static void pair_close(struct pair *p)
{
    CHECK("pair: destroy QPs", ibv_destroy_qp(p->a) == 0 && ibv_destroy_qp(p->b) == 0);
    CHECK("pair: destroy CQs", ibv_destroy_cq(p->cqa) == 0 && ibv_destroy_cq(p->cqb) == 0);
    dev_close(&p->d);
}

#define RW (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE)

static void test_loopback(void)
{
    section("one-process loopback: READ, WRITE, WRITE_WITH_IMM");
    struct pair p;
    pair_open(&p, 256, 16, IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE, 7);
    size_t n = 8 << 20;
    char *la = malloc(n), *rb = malloc(n);
    fill_random(rb, n, 1);
    memset(la, 0, n);
    struct ibv_mr *ma = ibv_reg_mr(p.d.pd, la, n, RW), *mb = ibv_reg_mr(p.d.pd, rb, n, RW);
    CHECK("loop: MRs", ma && mb);
    CHECK("loop: post 100 READ segments", post_segments(p.a, IBV_WR_RDMA_READ, la, ma->lkey, (uintptr_t)rb,
                                                        mb->rkey, n, 100, 1000) == 0);
    struct ibv_wc wc[4];
    CHECK("loop: one signaled READ completion", wait_wc(p.cqa, wc, 1, 5000) == 1);
    CHECK("loop: READ completion fields",
          wc[0].status == IBV_WC_SUCCESS && wc[0].opcode == IBV_WC_RDMA_READ && wc[0].wr_id == 1099 &&
              wc[0].qp_num == p.a->qp_num && wc[0].vendor_err == 0);
    CHECK("loop: READ byte-exact", memcmp(la, rb, n) == 0);
    CHECK("loop: no more completions", wait_wc(p.cqa, wc, 1, 50) == 0);
    fill_random(la, n, 2);
    CHECK("loop: post 77 WRITE segments", post_segments(p.a, IBV_WR_RDMA_WRITE, la, ma->lkey, (uintptr_t)rb,
                                                        mb->rkey, n, 77, 2000) == 0);
    CHECK("loop: one signaled WRITE completion", wait_wc(p.cqa, wc, 1, 5000) == 1);
    CHECK("loop: WRITE completion fields",
          wc[0].status == IBV_WC_SUCCESS && wc[0].opcode == IBV_WC_RDMA_WRITE && wc[0].wr_id == 2076);
    CHECK("loop: WRITE byte-exact", memcmp(la, rb, n) == 0);

    /* a READ's byte_len */
    CHECK("loop: READ 12345 bytes", post1(p.a, IBV_WR_RDMA_READ, 7, la, 12345, ma->lkey, (uintptr_t)rb + 3, mb->rkey,
                                          1, 0) == 0);
    CHECK("loop: READ byte_len", wait_wc(p.cqa, wc, 1, 5000) == 1 && wc[0].status == IBV_WC_SUCCESS &&
                                     wc[0].byte_len == 12345);

    /* unsignaled successes give no completion */
    for (int i = 0; i < 3; i++)
        CHECK("loop: post unsignaled", post1(p.a, IBV_WR_RDMA_WRITE, 50 + (uint64_t)i, la, 100, ma->lkey,
                                             (uintptr_t)rb, mb->rkey, 0, 0) == 0);
    CHECK("loop: unsignaled successes give no completion", wait_wc(p.cqa, wc, 1, 100) == 0);
    /* RC completes in order: a signaled WR's completion covers the unsignaled ones before it */
    CHECK("loop: signaled zero-length WRITE after them",
          post1(p.a, IBV_WR_RDMA_WRITE, 53, la, 0, ma->lkey, (uintptr_t)rb, mb->rkey, 1, 0) == 0 &&
              wait_wc(p.cqa, wc, 1, 5000) == 1 && wc[0].wr_id == 53 && wc[0].status == IBV_WC_SUCCESS);

    /* WRITE_WITH_IMM consumes a posted receive */
    fill_random(la, 5000, 3);
    CHECK("imm: post_recv", post_recv1(p.b, 4242) == 0);
    CHECK("imm: post", post1(p.a, IBV_WR_RDMA_WRITE_WITH_IMM, 9, la, 5000, ma->lkey, (uintptr_t)rb + 100, mb->rkey,
                             1, 0xdeadbeef) == 0);
    CHECK("imm: requester completion", wait_wc(p.cqa, wc, 1, 5000) == 1 && wc[0].status == IBV_WC_SUCCESS &&
                                           wc[0].opcode == IBV_WC_RDMA_WRITE && wc[0].wr_id == 9);
    CHECK("imm: receive completion", wait_wc(p.cqb, wc, 1, 5000) == 1);
    CHECK("imm: receive fields", wc[0].status == IBV_WC_SUCCESS && wc[0].opcode == IBV_WC_RECV_RDMA_WITH_IMM &&
                                     (wc[0].wc_flags & IBV_WC_WITH_IMM) && ntohl(wc[0].imm_data) == 0xdeadbeef &&
                                     wc[0].byte_len == 5000 && wc[0].wr_id == 4242 && wc[0].qp_num == p.b->qp_num);
    CHECK("imm: data", memcmp(la, rb + 100, 5000) == 0);

    /* a large single WR each way */
    size_t big = 48u << 20;
    char *bl = malloc(big), *br = malloc(big);
    fill_random(br, big, 4);
    struct ibv_mr *mbl = ibv_reg_mr(p.d.pd, bl, big, RW), *mbr = ibv_reg_mr(p.d.pd, br, big, RW);
    uint64_t t0 = now_ms();
    CHECK("big: READ 48 MiB in one WR",
          post1(p.a, IBV_WR_RDMA_READ, 11, bl, (uint32_t)big, mbl->lkey, (uintptr_t)br, mbr->rkey, 1, 0) == 0 &&
              wait_wc(p.cqa, wc, 1, 10000) == 1 && wc[0].status == IBV_WC_SUCCESS && wc[0].byte_len == big);
    CHECK("big: READ byte-exact", memcmp(bl, br, big) == 0);
    fill_random(bl, big, 5);
    CHECK("big: WRITE 48 MiB in one WR",
          post1(p.a, IBV_WR_RDMA_WRITE, 12, bl, (uint32_t)big, mbl->lkey, (uintptr_t)br, mbr->rkey, 1, 0) == 0 &&
              wait_wc(p.cqa, wc, 1, 10000) == 1 && wc[0].status == IBV_WC_SUCCESS);
    CHECK("big: WRITE byte-exact", memcmp(bl, br, big) == 0);
    printf("   96 MiB moved in %llu ms\n", (unsigned long long)(now_ms() - t0));
    /* dereg at the responder while a WRITE into it runs: after ibv_dereg_mr returns the fake never touches it */
    memset(br, 0, big);
    CHECK("race: WRITE 48 MiB posted",
          post1(p.a, IBV_WR_RDMA_WRITE, 14, bl, (uint32_t)big, mbl->lkey, (uintptr_t)br, mbr->rkey, 1, 0) == 0);
    usleep(3000);
    CHECK("race: dereg during the WRITE", ibv_dereg_mr(mbr) == 0);
    char *snap = malloc(big);
    memcpy(snap, br, big);
    CHECK("race: WRITE completes with success or REM_ACCESS_ERR",
          wait_wc(p.cqa, wc, 1, 10000) == 1 &&
              (wc[0].status == IBV_WC_SUCCESS || wc[0].status == IBV_WC_REM_ACCESS_ERR));
    printf("   race: the WRITE ended with %s\n", ibv_wc_status_str(wc[0].status));
    usleep(20000);
    CHECK("race: memory untouched after dereg returned", memcmp(snap, br, big) == 0);
    free(snap);
    if (wc[0].status != IBV_WC_SUCCESS) { /* bring the requester back: RESET -> RTS */
        struct ibv_qp_attr a;
        memset(&a, 0, sizeof(a));
        a.qp_state = IBV_QPS_RESET;
        CHECK("race: RESET", ibv_modify_qp(p.a, &a, IBV_QP_STATE) == 0);
        a.qp_state = IBV_QPS_INIT;
        a.port_num = 1;
        a.qp_access_flags = IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE;
        CHECK("race: INIT", ibv_modify_qp(p.a, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT |
                                                        IBV_QP_ACCESS_FLAGS) == 0);
        qp_connect(p.a, p.b->qp_num, &p.d.gid, 7);
    }
    ibv_dereg_mr(mbl);
    free(bl);
    free(br);

    /* dereg: later remote access with its rkey fails at the peer */
    uint32_t old_rkey = mb->rkey;
    CHECK("dereg: ok", ibv_dereg_mr(mb) == 0);
    CHECK("dereg: READ with the old rkey -> REM_ACCESS_ERR",
          post1(p.a, IBV_WR_RDMA_READ, 13, la, 64, ma->lkey, (uintptr_t)rb, old_rkey, 1, 0) == 0 &&
              wait_wc(p.cqa, wc, 1, 5000) == 1 && wc[0].status == IBV_WC_REM_ACCESS_ERR);
    CHECK("dereg: requester QP in ERR", qp_state(p.a) == IBV_QPS_ERR);
    ibv_dereg_mr(ma);
    free(la);
    free(rb);
    pair_close(&p);
}

/* Runs one failing WR followed by two unsignaled WRs on a fresh pair; checks status then the flushes. */
static void error_case(const char *name, int b_access, int mr_access, int op, int bad_lkey, int bad_rkey,
                       int oob, int expect)
{
    struct pair p;
    pair_open(&p, 16, 4, b_access, 7);
    char *la = calloc(1, 65536), *rb = calloc(1, 65536);
    struct ibv_mr *ma = ibv_reg_mr(p.d.pd, la, 65536, RW), *mb = ibv_reg_mr(p.d.pd, rb, 65536, mr_access);
    CHECK(name, ma && mb);
    CHECK(name, post_recv1(p.b, 77) == 0);
    uint32_t lkey = bad_lkey ? ma->lkey ^ 0x5555 : ma->lkey;
    uint32_t rkey = bad_rkey ? mb->rkey ^ 0x5555 : mb->rkey;
    uint64_t raddr = (uintptr_t)rb + (oob ? 65000 : 0);
    CHECK(name, post1(p.a, (enum ibv_wr_opcode)op, 1, la, 1024, lkey, raddr, rkey, 1, 0) == 0);
    CHECK(name, post1(p.a, IBV_WR_RDMA_WRITE, 2, la, 16, ma->lkey, (uintptr_t)rb, mb->rkey, 0, 0) == 0);
    CHECK(name, post1(p.a, IBV_WR_RDMA_READ, 3, la, 16, ma->lkey, (uintptr_t)rb, mb->rkey, 0, 0) == 0);
    struct ibv_wc wc[3];
    int got = wait_wc(p.cqa, wc, 3, 5000);
    if (got >= 1 && wc[0].status != (enum ibv_wc_status)expect)
        fprintf(stderr, "   %s: got %s\n", name, ibv_wc_status_str(wc[0].status));
    CHECK(name, got == 3 && wc[0].wr_id == 1 && wc[0].status == (enum ibv_wc_status)expect);
    char fl[200];
    snprintf(fl, sizeof(fl), "%s: later WRs flushed (unsignaled too)", name);
    CHECK(fl, wc[1].wr_id == 2 && wc[1].status == IBV_WC_WR_FLUSH_ERR && wc[2].wr_id == 3 &&
                  wc[2].status == IBV_WC_WR_FLUSH_ERR);
    snprintf(fl, sizeof(fl), "%s: QP in ERR, post in ERR flushes", name);
    CHECK(fl, qp_state(p.a) == IBV_QPS_ERR &&
                  post1(p.a, IBV_WR_RDMA_WRITE, 4, la, 16, ma->lkey, (uintptr_t)rb, mb->rkey, 0, 0) == 0 &&
                  wait_wc(p.cqa, wc, 1, 2000) == 1 && wc[0].wr_id == 4 && wc[0].status == IBV_WC_WR_FLUSH_ERR);
    /* responder's posted receive is flushed when it goes to ERR */
    CHECK("flush: responder to ERR", set_state(p.b, IBV_QPS_ERR) == 0);
    CHECK("flush: posted receive flushed", wait_wc(p.cqb, wc, 1, 2000) == 1 && wc[0].wr_id == 77 &&
                                                wc[0].status == IBV_WC_WR_FLUSH_ERR);
    ibv_dereg_mr(ma);
    ibv_dereg_mr(mb);
    free(la);
    free(rb);
    pair_close(&p);
}

static void test_errors(void)
{
    section("error completions");
    const int R = IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE;
    error_case("wrong rkey -> REM_ACCESS_ERR", R, RW, IBV_WR_RDMA_READ, 0, 1, 0, IBV_WC_REM_ACCESS_ERR);
    error_case("out-of-bounds span -> REM_ACCESS_ERR", R, RW, IBV_WR_RDMA_WRITE, 0, 0, 1, IBV_WC_REM_ACCESS_ERR);
    error_case("MR without REMOTE_READ -> REM_ACCESS_ERR", R, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE,
               IBV_WR_RDMA_READ, 0, 0, 0, IBV_WC_REM_ACCESS_ERR);
    error_case("QP without REMOTE_WRITE -> REM_ACCESS_ERR", IBV_ACCESS_REMOTE_READ, RW, IBV_WR_RDMA_WRITE, 0, 0, 0,
               IBV_WC_REM_ACCESS_ERR);
    error_case("bad lkey -> LOC_PROT_ERR", R, RW, IBV_WR_RDMA_WRITE, 1, 0, 0, IBV_WC_LOC_PROT_ERR);

    /* RNR: WRITE_WITH_IMM without a posted receive, rnr_retry 2 */
    {
        struct pair p;
        pair_open(&p, 16, 4, R, 2);
        char *la = calloc(1, 4096), *rb = calloc(1, 4096);
        struct ibv_mr *ma = ibv_reg_mr(p.d.pd, la, 4096, RW), *mb = ibv_reg_mr(p.d.pd, rb, 4096, RW);
        struct ibv_wc wc[2];
        uint64_t t0 = now_ms();
        CHECK("rnr: post", post1(p.a, IBV_WR_RDMA_WRITE_WITH_IMM, 1, la, 100, ma->lkey, (uintptr_t)rb, mb->rkey, 1,
                                 5) == 0);
        CHECK("rnr: RNR_RETRY_EXC_ERR", wait_wc(p.cqa, wc, 1, 5000) == 1 && wc[0].status == IBV_WC_RNR_RETRY_EXC_ERR);
        printf("   rnr: %llu ms\n", (unsigned long long)(now_ms() - t0));
        CHECK("rnr: no receive completion at the responder", wait_wc(p.cqb, wc, 1, 50) == 0);
        ibv_dereg_mr(ma);
        ibv_dereg_mr(mb);
        free(la);
        free(rb);
        pair_close(&p);
    }
    /* no such QP / unreachable peer */
    {
        struct dev d;
        dev_open(&d);
        struct ibv_cq *cq = ibv_create_cq(d.ctx, 16, NULL, NULL, 0);
        char *la = calloc(1, 4096);
        struct ibv_mr *ma = ibv_reg_mr(d.pd, la, 4096, RW);
        struct ibv_wc wc;
        struct ibv_qp *qp = qp_new(&d, cq, 4, 0, 0);
        qp_connect(qp, 0xabcdef, &d.gid, 7);
        CHECK("noqp: post", post1(qp, IBV_WR_RDMA_READ, 1, la, 100, ma->lkey, 4096, 1234, 1, 0) == 0);
        CHECK("noqp: RETRY_EXC_ERR", wait_wc(cq, &wc, 1, 5000) == 1 && wc.status == IBV_WC_RETRY_EXC_ERR);
        ibv_destroy_qp(qp);
        /* a port nobody listens on: connection refused */
        union ibv_gid g = d.gid;
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t sl = sizeof(sa);
        bind(fd, (struct sockaddr *)&sa, sizeof(sa));
        getsockname(fd, (struct sockaddr *)&sa, &sl);
        close(fd); /* the port is free now */
        g.raw[8] = (uint8_t)(ntohs(sa.sin_port) >> 8);
        g.raw[9] = (uint8_t)ntohs(sa.sin_port);
        qp = qp_new(&d, cq, 4, 0, 0);
        qp_connect(qp, 77, &g, 7);
        CHECK("refused: post", post1(qp, IBV_WR_RDMA_WRITE, 2, la, 100, ma->lkey, 4096, 1234, 1, 0) == 0);
        CHECK("refused: RETRY_EXC_ERR", wait_wc(cq, &wc, 1, 5000) == 1 && wc.status == IBV_WC_RETRY_EXC_ERR);
        ibv_destroy_qp(qp);
        /* a peer that accepts but never answers: the transport timeout, 4.096 us * 2^14 * (7 + 1) = 537 ms */
        fd = socket(AF_INET, SOCK_STREAM, 0);
        sa.sin_port = 0;
        sl = sizeof(sa);
        CHECK("silent: listener", bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(fd, 4) == 0 &&
                                      getsockname(fd, (struct sockaddr *)&sa, &sl) == 0);
        g.raw[8] = (uint8_t)(ntohs(sa.sin_port) >> 8);
        g.raw[9] = (uint8_t)ntohs(sa.sin_port);
        qp = qp_new(&d, cq, 4, 0, 0);
        qp_connect(qp, 77, &g, 7);
        uint64_t t0 = now_ms();
        CHECK("silent: post", post1(qp, IBV_WR_RDMA_READ, 3, la, 100, ma->lkey, 4096, 1234, 1, 0) == 0);
        CHECK("silent: RETRY_EXC_ERR", wait_wc(cq, &wc, 1, 5000) == 1 && wc.status == IBV_WC_RETRY_EXC_ERR);
        uint64_t el = now_ms() - t0;
        printf("   silent peer: RETRY_EXC_ERR after %llu ms\n", (unsigned long long)el);
        CHECK("silent: after about the transport timeout", el >= 450 && el < 3000);
        close(fd);
        ibv_destroy_qp(qp);
        ibv_dereg_mr(ma);
        free(la);
        ibv_destroy_cq(cq);
        dev_close(&d);
    }
}

static void test_slots(void)
{
    section("send queue slots");
    struct pair p;
    pair_open(&p, 4, 0, IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE, 7);
    char *la = calloc(1, 4096), *rb = calloc(1, 4096);
    struct ibv_mr *ma = ibv_reg_mr(p.d.pd, la, 4096, RW), *mb = ibv_reg_mr(p.d.pd, rb, 4096, RW);
    struct ibv_sge sge[6];
    struct ibv_send_wr wr[6], *bad = NULL;
    memset(wr, 0, sizeof(wr));
    for (int i = 0; i < 6; i++) {
        sge[i] = (struct ibv_sge){(uintptr_t)la, 8, ma->lkey};
        wr[i].wr_id = (uint64_t)i;
        wr[i].opcode = IBV_WR_RDMA_WRITE;
        wr[i].sg_list = &sge[i];
        wr[i].num_sge = 1;
        wr[i].wr.rdma.remote_addr = (uintptr_t)rb;
        wr[i].wr.rdma.rkey = mb->rkey;
        wr[i].next = i < 5 ? &wr[i + 1] : NULL;
    }
    CHECK("slots: 6 WRs into 4 slots is ENOMEM, bad_wr = the 5th", ibv_post_send(p.a, wr, &bad) == ENOMEM &&
                                                                       bad == &wr[4]);
    struct ibv_wc wc[8];
    CHECK("slots: unsignaled WRs executed silently", wait_wc(p.cqa, wc, 1, 200) == 0);
    wr[4].next = NULL;
    bad = NULL;
    CHECK("slots: still full until a completion is polled", ibv_post_send(p.a, &wr[4], &bad) == ENOMEM);
    CHECK("slots: to ERR", set_state(p.a, IBV_QPS_ERR) == 0);
    CHECK("slots: nothing outstanding to flush", wait_wc(p.cqa, wc, 8, 100) == 0);
    wr[3].opcode = IBV_WR_SEND;
    wr[3].next = NULL;
    bad = NULL;
    CHECK("slots: opcode SEND is EINVAL", ibv_post_send(p.a, &wr[3], &bad) == EINVAL && bad == &wr[3]);
    CHECK("slots: RESET frees them", set_state(p.a, IBV_QPS_RESET) == 0);
    ibv_dereg_mr(ma);
    ibv_dereg_mr(mb);
    free(la);
    free(rb);
    pair_close(&p);
}

static void test_channel(void)
{
    section("completion channel");
    struct dev d;
    dev_open(&d);
    struct ibv_comp_channel *ch = ibv_create_comp_channel(d.ctx);
    CHECK("chan: create", ch && ch->fd >= 0);
    int token;
    struct ibv_cq *cq = ibv_create_cq(d.ctx, 16, &token, ch, 0);
    struct ibv_cq *cqb = ibv_create_cq(d.ctx, 16, NULL, NULL, 0);
    CHECK("chan: CQ with channel", cq && cqb && cq->channel == ch);
    struct ibv_qp *a = qp_new(&d, cq, 8, 0, RW), *b = qp_new(&d, cqb, 8, 0, RW);
    qp_connect(a, b->qp_num, &d.gid, 7);
    qp_connect(b, a->qp_num, &d.gid, 7);
    char *buf = calloc(1, 4096);
    struct ibv_mr *mr = ibv_reg_mr(d.pd, buf, 4096, RW);
    CHECK("chan: arm", ibv_req_notify_cq(cq, 0) == 0);
    struct pollfd pf = {ch->fd, POLLIN, 0};
    CHECK("chan: nothing before a completion", poll(&pf, 1, 0) == 0);
    CHECK("chan: post", post1(a, IBV_WR_RDMA_WRITE, 5, buf, 100, mr->lkey, (uintptr_t)buf + 1000, mr->rkey, 1, 0) == 0);
    CHECK("chan: poll() on channel->fd wakes", poll(&pf, 1, 3000) == 1 && (pf.revents & POLLIN));
    struct ibv_cq *ev = NULL;
    void *evctx = NULL;
    CHECK("chan: get_cq_event returns the CQ", ibv_get_cq_event(ch, &ev, &evctx) == 0 && ev == cq &&
                                                   evctx == &token);
    ibv_ack_cq_events(ev, 1);
    struct ibv_wc wc;
    CHECK("chan: the completion", wait_wc(cq, &wc, 1, 1000) == 1 && wc.wr_id == 5 && wc.status == IBV_WC_SUCCESS);
    /* not armed: no event */
    CHECK("chan: post (unarmed)", post1(a, IBV_WR_RDMA_WRITE, 6, buf, 100, mr->lkey, (uintptr_t)buf + 1000,
                                        mr->rkey, 1, 0) == 0);
    CHECK("chan: completion (unarmed)", wait_wc(cq, &wc, 1, 1000) == 1);
    pf.revents = 0;
    CHECK("chan: no event when not armed", poll(&pf, 1, 50) == 0);
    fcntl(ch->fd, F_SETFL, fcntl(ch->fd, F_GETFL) | O_NONBLOCK);
    errno = 0;
    CHECK("chan: nonblocking get_cq_event is EAGAIN", ibv_get_cq_event(ch, &ev, &evctx) == -1 && errno == EAGAIN);
    CHECK("ebusy: destroy_comp_channel with a CQ", ibv_destroy_comp_channel(ch) == EBUSY);
    ibv_destroy_qp(a);
    ibv_destroy_qp(b);
    ibv_dereg_mr(mr);
    free(buf);
    CHECK("chan: destroy CQ (events acked)", ibv_destroy_cq(cq) == 0 && ibv_destroy_cq(cqb) == 0);
    errno = 0;
    CHECK("ebusy: close_device with a channel", ibv_dealloc_pd(d.pd) == 0 && ibv_close_device(d.ctx) == -1 &&
                                                    errno == EBUSY);
    CHECK("chan: destroy channel", ibv_destroy_comp_channel(ch) == 0);
    CHECK("chan: close device", ibv_close_device(d.ctx) == 0);
}

static void test_cq_overflow(void)
{
    section("CQ overflow");
    struct pair p;
    pair_open(&p, 16, 0, IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE, 7);
    struct ibv_cq *small = ibv_create_cq(p.d.ctx, 2, NULL, NULL, 0);
    struct ibv_qp *q = qp_new(&p.d, small, 16, 0, 0), *r = qp_new(&p.d, p.cqb, 4, 0, RW);
    qp_connect(q, r->qp_num, &p.d.gid, 7);
    qp_connect(r, q->qp_num, &p.d.gid, 7);
    char *la = calloc(1, 4096), *rb = calloc(1, 4096);
    struct ibv_mr *ma = ibv_reg_mr(p.d.pd, la, 4096, RW), *mb = ibv_reg_mr(p.d.pd, rb, 4096, RW);
    for (int i = 0; i < 3; i++)
        CHECK("overflow: post", post1(q, IBV_WR_RDMA_WRITE, (uint64_t)i, la, 10, ma->lkey, (uintptr_t)rb, mb->rkey, 1,
                                      0) == 0);
    uint64_t end = now_ms() + 3000;
    while (qp_state(q) != IBV_QPS_ERR && now_ms() < end)
        usleep(1000);
    CHECK("overflow: the QP adding to a full CQ goes to ERR", qp_state(q) == IBV_QPS_ERR);
    struct ibv_wc wc[4];
    CHECK("overflow: the CQ keeps its cqe entries", wait_wc(small, wc, 4, 100) == 2 && wc[0].wr_id == 0 &&
                                                        wc[1].wr_id == 1);
    CHECK("overflow: destroy", ibv_destroy_qp(q) == 0 && ibv_destroy_qp(r) == 0 && ibv_destroy_cq(small) == 0);
    ibv_dereg_mr(ma);
    ibv_dereg_mr(mb);
    free(la);
    free(rb);
    pair_close(&p);
}

static void test_fault_env(void)
{
    section("fault injection env");
    setenv("KVM_FAKE_VERBS_QP_ERROR_AFTER_BYTES", "1500", 1);
    setenv("KVM_FAKE_VERBS_DELAY_US", "30000", 1);
    struct pair p;
    pair_open(&p, 16, 0, IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE, 7);
    unsetenv("KVM_FAKE_VERBS_QP_ERROR_AFTER_BYTES");
    unsetenv("KVM_FAKE_VERBS_DELAY_US");
    char *la = calloc(1, 4096), *rb = calloc(1, 4096);
    struct ibv_mr *ma = ibv_reg_mr(p.d.pd, la, 4096, RW), *mb = ibv_reg_mr(p.d.pd, rb, 4096, RW);
    struct ibv_wc wc[3];
    uint64_t t0 = now_ms();
    for (int i = 0; i < 3; i++)
        CHECK("fault: post", post1(p.a, IBV_WR_RDMA_WRITE, (uint64_t)i, la, 1000, ma->lkey, (uintptr_t)rb, mb->rkey,
                                   1, 0) == 0);
    CHECK("fault: three completions", wait_wc(p.cqa, wc, 3, 5000) == 3);
    CHECK("fault: DELAY_US slows each WR", now_ms() - t0 >= 80);
    CHECK("fault: 1000 and 2000 bytes succeed", wc[0].status == IBV_WC_SUCCESS && wc[1].status == IBV_WC_SUCCESS);
    CHECK("fault: after 1500 bytes the next WR is GENERAL_ERR", wc[2].status == IBV_WC_GENERAL_ERR &&
                                                                     qp_state(p.a) == IBV_QPS_ERR);
    ibv_dereg_mr(ma);
    ibv_dereg_mr(mb);
    free(la);
    free(rb);
    pair_close(&p);
}

/* ---------------------------------------------------------------------------------------------------------- */
/* two processes                                                                                               */

struct hello {
    union ibv_gid gid;
    uint32_t qpn;
    uint32_t rkey;
    uint64_t addr;
};

#define XN (6u << 20)

static void xread(int fd, void *p, size_t n)
{
    char *c = p;
    while (n) {
        ssize_t r = read(fd, c, n);
        if (r <= 0) {
            fprintf(stderr, "FAIL fork: pipe read\n");
            exit(1);
        }
        c += r;
        n -= (size_t)r;
    }
}

static void child(int rfd, int wfd)
{
    struct dev d;
    dev_open(&d);
    struct ibv_cq *cq = ibv_create_cq(d.ctx, 64, NULL, NULL, 0);
    struct ibv_qp *qp = qp_new(&d, cq, 16, 16, IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE);
    char *buf = malloc(XN);
    fill_random(buf, XN, 42);
    struct ibv_mr *mr = ibv_reg_mr(d.pd, buf, XN, RW);
    struct hello me = {d.gid, qp->qp_num, mr->rkey, (uintptr_t)buf}, peer;
    if (write(wfd, &me, sizeof(me)) != sizeof(me))
        exit(2);
    xread(rfd, &peer, sizeof(peer));
    qp_connect(qp, peer.qpn, &peer.gid, 7);
    CHECK("fork child: post_recv", post_recv1(qp, 99) == 0);
    char go = 'r';
    if (write(wfd, &go, 1) != 1)
        exit(2);
    struct ibv_wc wc;
    int got = wait_wc(cq, &wc, 1, 10000);
    char res = 'n';
    if (got == 1 && wc.status == IBV_WC_SUCCESS && wc.opcode == IBV_WC_RECV_RDMA_WITH_IMM &&
        ntohl(wc.imm_data) == 0x1234 && wc.byte_len == XN / 2 && wc.wr_id == 99) {
        char *expect = malloc(XN / 2);
        fill_random(expect, XN / 2, 43);
        res = memcmp(expect, buf + XN / 2, XN / 2) == 0 ? 'y' : 'd';
        free(expect);
    }
    if (write(wfd, &res, 1) != 1)
        exit(2);
    pause(); /* until SIGKILL */
    exit(0);
}

static void test_fork(void)
{
    section("two processes (fork): READ, WRITE_WITH_IMM, peer SIGKILL");
    int p2c[2], c2p[2];
    CHECK("fork: pipes", pipe(p2c) == 0 && pipe(c2p) == 0);
    fflush(stdout);
    pid_t pid = fork();
    CHECK("fork: fork", pid >= 0);
    if (pid == 0) {
        close(p2c[1]);
        close(c2p[0]);
        child(p2c[0], c2p[1]);
    }
    close(p2c[0]);
    close(c2p[1]);
    struct dev d;
    dev_open(&d);
    struct ibv_cq *cq = ibv_create_cq(d.ctx, 64, NULL, NULL, 0);
    struct ibv_qp *qp = qp_new(&d, cq, 64, 0, 0);
    char *buf = calloc(1, XN);
    struct ibv_mr *mr = ibv_reg_mr(d.pd, buf, XN, RW);
    struct hello me = {d.gid, qp->qp_num, mr->rkey, (uintptr_t)buf}, peer;
    CHECK("fork: hello", write(p2c[1], &me, sizeof(me)) == sizeof(me));
    xread(c2p[0], &peer, sizeof(peer));
    qp_connect(qp, peer.qpn, &peer.gid, 7);
    char c;
    xread(c2p[0], &c, 1);
    CHECK("fork: READ 6 MiB in 37 segments from the child",
          post_segments(qp, IBV_WR_RDMA_READ, buf, mr->lkey, peer.addr, peer.rkey, XN, 37, 0) == 0);
    struct ibv_wc wc;
    CHECK("fork: READ completion", wait_wc(cq, &wc, 1, 10000) == 1 && wc.status == IBV_WC_SUCCESS);
    char *expect = malloc(XN);
    fill_random(expect, XN, 42);
    CHECK("fork: READ byte-exact", memcmp(buf, expect, XN) == 0);
    fill_random(buf, XN / 2, 43);
    CHECK("fork: WRITE_WITH_IMM", post1(qp, IBV_WR_RDMA_WRITE_WITH_IMM, 5, buf, XN / 2, mr->lkey,
                                        peer.addr + XN / 2, peer.rkey, 1, 0x1234) == 0);
    CHECK("fork: WRITE_WITH_IMM completion", wait_wc(cq, &wc, 1, 10000) == 1 && wc.status == IBV_WC_SUCCESS);
    xread(c2p[0], &c, 1);
    CHECK("fork: child saw the receive completion and the bytes", c == 'y');
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    uint64_t t0 = now_ms();
    CHECK("fork: READ after SIGKILL posted", post1(qp, IBV_WR_RDMA_READ, 6, buf, 4096, mr->lkey, peer.addr,
                                                   peer.rkey, 1, 0) == 0);
    CHECK("fork: peer killed -> RETRY_EXC_ERR", wait_wc(cq, &wc, 1, 10000) == 1 &&
                                                    wc.status == IBV_WC_RETRY_EXC_ERR);
    printf("   killed peer detected in %llu ms\n", (unsigned long long)(now_ms() - t0));
    free(expect);
    ibv_destroy_qp(qp);
    ibv_dereg_mr(mr);
    free(buf);
    ibv_destroy_cq(cq);
    dev_close(&d);
    close(p2c[1]);
    close(c2p[0]);
}

int main(void)
{
    uint64_t t0 = now_ms();
    setenv("KVM_FAKE_VERBS_IP", "127.0.0.1", 1);
    int tasks_start = count_tasks();
    test_devices();
    test_port();
    int tasks0 = count_tasks(); /* sanitizer runtimes may start a thread of their own by now */
#ifndef __SANITIZE_THREAD__
    CHECK("threads: none left after the first contexts closed", tasks0 == tasks_start);
#endif
    (void)tasks_start;
    test_fork(); /* forks while this process has no context open */
    test_mr();
    test_state_machine();
    test_loopback();
    test_errors();
    test_slots();
    test_channel();
    test_cq_overflow();
    test_fault_env();
    section("no thread left");
    CHECK("threads: every fake thread joined once all contexts are closed", count_tasks() == tasks0);
    printf("all %d checks passed in %llu ms\n", g_checks, (unsigned long long)(now_ms() - t0));
    return 0;
}
