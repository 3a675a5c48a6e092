/*
 * kvm_rdma.h - the C boundary of kvmarket-rdma's verbs transport: a small shim over libibverbs.
 *
 * Why a shim and not a binding of verbs.h: ibv_reg_mr is a macro, ibv_post_send / ibv_poll_cq / ibv_post_recv /
 * ibv_req_notify_cq are inline functions calling through the context's ops table, and an import must be one native
 * call, never a Java loop of per-segment verbs calls. The shim links libibverbs.so.1 dynamically and nothing else;
 * CUDA memory is registered through a dma-buf when libcuda.so.1 can be dlopen'ed (no link-time CUDA dependency).
 *
 * Objects are opaque handles passed to Java as uint64 (0 = none):
 *   ctx      an opened device port: ibv_context + protection domain + the chosen port and GID index.
 *   mr       a memory registration in a ctx's protection domain.
 *   channel  RC queue pairs to ONE peer sharing one completion queue (send and receive) with a completion channel.
 *            A channel is used by one thread at a time: Java checks one out per transfer.
 *
 * Conventions:
 *   - Return 0 (or a count) on success, or a NEGATIVE code: KVM_RDMA_E* below, or -(KVM_RDMA_ERRNO_BASE + errno)
 *     when a verbs call failed with errno. kvm_rdma_error_string() describes the last failure of the calling
 *     thread in words (which call, which object, errno text).
 *   - Nothing blocks except kvm_rdma_poll (bounded by its timeout).
 *   - Every create has a destroy; kvm_rdma_live() counts what is still open, for leak checks.
 */
#ifndef KVM_RDMA_H
#define KVM_RDMA_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KVM_RDMA_OK 0
#define KVM_RDMA_EINVAL (-1)    /* bad argument (null handle, count <= 0, span overflow, unknown opcode) */
#define KVM_RDMA_ENOMEM (-2)    /* host allocation failed */
#define KVM_RDMA_ENODEV (-3)    /* no RDMA device (of that name) */
#define KVM_RDMA_ENOPORT (-4)   /* the device has no ACTIVE port (of that number) */
#define KVM_RDMA_ESTATE (-5)    /* object in the wrong state (channel not connected, in error) */
#define KVM_RDMA_ETIMEDOUT (-6) /* kvm_rdma_poll saw nothing before its timeout */
#define KVM_RDMA_ERRNO_BASE 1000

/* Access bits for kvm_rdma_reg (same values as enum ibv_access_flags). */
#define KVM_RDMA_LOCAL_WRITE 1
#define KVM_RDMA_REMOTE_WRITE 2
#define KVM_RDMA_REMOTE_READ 4

/* Operations for kvm_rdma_post. */
#define KVM_RDMA_OP_READ 0           /* RDMA READ: remote -> local */
#define KVM_RDMA_OP_WRITE 1          /* RDMA WRITE: local -> remote */
#define KVM_RDMA_OP_WRITE_WITH_IMM 2 /* RDMA WRITE; the last WR of each QP's run carries the immediate */

/* Or'ed into the op of kvm_rdma_post / kvm_rdma_post_keyed: segments back to back at the remote end share a WR. */
#define KVM_RDMA_POST_MERGE 0x100

/* Completion opcodes reported by kvm_rdma_poll (values of enum ibv_wc_opcode). */
#define KVM_RDMA_WC_RDMA_WRITE 1
#define KVM_RDMA_WC_RDMA_READ 2
#define KVM_RDMA_WC_RECV_RDMA_WITH_IMM 129

/*
 * Probes the verbs stack: the number of devices with at least one ACTIVE port, or a negative code. Writes a short
 * description into cause (cap bytes, NUL-terminated) when it returns <= 0: "no RDMA device", "mlx5_0: no ACTIVE
 * port", or the errno of ibv_get_device_list.
 */
int kvm_rdma_probe(char *cause, int32_t cap);

/*
 * Opens device dev_name (NULL or "" = the first device with an ACTIVE port) on port (0 = its first ACTIVE port),
 * with GID index gid_index (-1 = the first non-zero GID of the port; RoCE needs a GID, InfiniBand uses the LID):
 * ibv_open_device + ibv_alloc_pd. Writes into info[8]:
 *   [0] port number  [1] LID  [2] active MTU (enum ibv_mtu)  [3] link layer (enum: 1 InfiniBand, 2 Ethernet)
 *   [4] GID index    [5] max QP read depth (max_qp_rd_atom)  [6] max QP work requests  [7] max CQ entries
 * and the 16-byte GID into gid. Returns KVM_RDMA_OK and the handle through *ctx_out.
 */
int kvm_rdma_open(const char *dev_name, int32_t port, int32_t gid_index, uint64_t *ctx_out, int32_t *info,
                  uint8_t *gid);

/*
 * A protection domain of its own on ctx's device and port, used like a ctx (kvm_rdma_reg, kvm_rdma_channel_create,
 * kvm_rdma_close): its queue pairs reach only its registrations, and the ctx's queue pairs none of its. Counted
 * among the open contexts; ctx cannot close before its domains.
 */
int kvm_rdma_domain_open(uint64_t ctx, uint64_t *domain_out);

/* ibv_dealloc_pd + ibv_close_device (a domain: only its PD). Fails with -(BASE+EBUSY) while MRs, channels or
 * domains of it are open. */
int kvm_rdma_close(uint64_t ctx);

/*
 * Registers [addr, addr + length) with access (KVM_RDMA_* bits). cuda != 0: addr is CUDA device memory; registers
 * it through ibv_reg_dmabuf_mr with the dma-buf fd of cuMemGetHandleForAddressRange (libcuda dlopen'ed), and
 * falls back to ibv_reg_mr (which works where nvidia-peermem is loaded). Writes lkey, rkey (as uint32 in int32).
 */
int kvm_rdma_reg(uint64_t ctx, uint64_t addr, uint64_t length, int32_t access, int32_t cuda, uint64_t *mr_out,
                 int32_t *lkey, int32_t *rkey);

/* ibv_dereg_mr. In-flight remote accesses to it then fail at the peer with a remote access error. */
int kvm_rdma_dereg(uint64_t mr);

/*
 * Creates a channel of nqp RC queue pairs (1..64) brought to INIT, sharing one CQ of nqp * (sq_depth + rq_depth)
 * entries with a completion channel. Each QP has sq_depth send and rq_depth receive work requests (rq_depth may
 * be 0: a pull-only channel), one SGE each, sq_sig_all = 0, and allows the remote operations in access
 * (KVM_RDMA_REMOTE_READ / _REMOTE_WRITE: what the peer may do through this channel's QPs). Writes the QP numbers
 * into qpns[nqp].
 */
int kvm_rdma_channel_create(uint64_t ctx, int32_t nqp, int32_t sq_depth, int32_t rq_depth, int32_t access,
                            uint64_t *channel_out, int32_t *qpns);

/*
 * Brings every QP of the channel RTR then RTS, QP i connected to remote_qpns[i] of the peer with remote_gid (16
 * bytes; used when the link layer is Ethernet or the GID is non-zero) / remote_lid, receiving from remote_psns[i]
 * and sending from local_psns[i] (24-bit). rd_atomic: outstanding RDMA READs per QP, both directions (clamped to the
 * device's limit). timeout (4.096 us * 2^timeout per try) and retry_cnt bound how long a dead peer takes to become
 * a retry-exceeded completion; rnr_retry (7 = forever) how often a WRITE WITH IMM waits for the peer to post
 * receives.
 */
int kvm_rdma_channel_connect(uint64_t channel, const int32_t *remote_qpns, const uint8_t *remote_gid,
                             int32_t remote_lid, const int32_t *remote_psns, const int32_t *local_psns,
                             int32_t mtu, int32_t rd_atomic, int32_t timeout, int32_t retry_cnt, int32_t rnr_retry);

/* Moves every QP of the channel to the error state: outstanding work completes with flush errors. */
int kvm_rdma_channel_fail(uint64_t channel);

/* Destroys the QPs, the CQ and the completion channel (acknowledging every event taken). */
int kvm_rdma_channel_destroy(uint64_t channel);

/*
 * Posts count work requests of opcode op as one call: segment i moves len[i] bytes between local_base + local_off[i]
 * (lkey) and remote_base + remote_off[i] (rkey). The segments are split into runs = min(nqp, count) contiguous runs
 * on QPs 0..runs-1, in order, run q of count / runs segments plus one more when q < count % runs, each
 * posted in order as chained ibv_post_send calls of up to 128 WRs (built in a small scratch that stays in cache).
 * With KVM_RDMA_POST_MERGE or'ed into op, consecutive segments of a run that lie back to back at the remote end
 * (same key) share one WR, one SGE each (up to the device's SGE limit, at most 16): an import's reads of one chunk
 * region into scattered blocks are one READ. A WR's wr_id is wr_id_base + the index of its first segment (without
 * merging: of its segment), so an error completion's wr_id says which segments of the run landed before it (those
 * before that index). Only the last WR of each run is
 * signaled (RC completes a QP's work in order, so its completion covers the run); with
 * KVM_RDMA_OP_WRITE_WITH_IMM that last WR carries imm (host order; sent in network order). Each run must fit its
 * QP's free send slots (Java keeps at most sq_depth unsignaled-and-unpolled WRs per QP). Returns the number of runs
 * posted (= the number of signaled completions to expect, min(count, nqp)), or a negative code when a post failed
 * (earlier runs stay posted: the caller fails the channel and drains it).
 */
int kvm_rdma_post(uint64_t channel, int32_t op, uint64_t wr_id_base, uint64_t local_base, int32_t lkey,
                  uint64_t remote_base, int32_t rkey, const int64_t *local_off, const int64_t *remote_off,
                  const int64_t *len, int32_t count, int32_t imm);

/*
 * kvm_rdma_post with a remote key per segment: segment i writes or reads remote_addr[i] (an absolute address in
 * the peer's registration of key rkeys[i]). For a push into a peer that registered each destination run on its own.
 */
int kvm_rdma_post_keyed(uint64_t channel, int32_t op, uint64_t wr_id_base, uint64_t local_base, int32_t lkey,
                        const int32_t *rkeys, const int64_t *local_off, const int64_t *remote_addr,
                        const int64_t *len, int32_t count, int32_t imm);

/* Posts count zero-length receive WRs (wr_id_base + i), spread over the channel's QPs, for WRITE WITH IMM. */
int kvm_rdma_post_recv(uint64_t channel, uint64_t wr_id_base, int32_t count);

/*
 * Waits up to timeout_ms (0 = do not wait) for completions on the channel's CQ and writes up to max of them:
 * wr_id, status (enum ibv_wc_status), opcode (KVM_RDMA_WC_*), byte_len, imm (host order), qp index within the
 * channel (-1 if unknown). Returns how many (>= 1), KVM_RDMA_ETIMEDOUT, or a negative code. Sleeps on the
 * completion channel, not a spin.
 */
int kvm_rdma_poll(uint64_t channel, int32_t max, int32_t timeout_ms, int64_t *wr_ids, int32_t *status,
                  int32_t *opcode, int32_t *byte_len, int32_t *imm, int32_t *qp_index);

/* Symbolic name of a code, or of an ibv_wc_status when wc != 0 (ibv_wc_status_str); static storage, never NULL. */
const char *kvm_rdma_code_name(int32_t code, int32_t wc);

/* The calling thread's last failure in words (which call failed and why); never NULL, "" when none. */
const char *kvm_rdma_error_string(void);

/* Writes the number of open contexts, MRs, channels and QPs into out[4], for leak checks. */
void kvm_rdma_live(int64_t *out);

#ifdef __cplusplus
}
#endif

#endif /* KVM_RDMA_H */
