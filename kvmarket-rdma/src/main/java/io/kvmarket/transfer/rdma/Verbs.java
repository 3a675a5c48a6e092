package io.kvmarket.transfer.rdma;

import org.bytedeco.javacpp.Loader;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.nio.charset.StandardCharsets;

/**
 * Whether RDMA verbs work in this process, decided once when the class initialises, with the cause kept, as Netty's
 * {@code Epoll} does: the shim and libibverbs must load (the build packages the shim only where the verbs headers
 * were present), and some device must have an ACTIVE port. {@code -Dkvmarket.rdma=false} turns verbs off even where
 * they work. One INFO line says which; nothing here throws at class load.
 */
public final class Verbs {

    /** System property that turns verbs off ({@code false}) where they would work: the transport falls back to TCP. */
    public static final String ENABLED = "kvmarket.rdma";

    private static final Logger LOG = LoggerFactory.getLogger(Verbs.class);
    private static final Throwable CAUSE = probe();

    static {
        if (CAUSE == null) {
            LOG.info("RDMA verbs available");
        } else {
            LOG.info("RDMA verbs unavailable: {}", CAUSE.getMessage());
        }
    }

    private Verbs() {
    }

    public static boolean isAvailable() {
        return CAUSE == null;
    }

    /** Why verbs are unavailable, or null when they are available. */
    public static Throwable unavailabilityCause() {
        return CAUSE;
    }

    /**
     * @throws IllegalStateException with {@link #unavailabilityCause()} as its cause, when not available
     */
    public static void ensureAvailability() {
        if (CAUSE != null) {
            throw new IllegalStateException("RDMA verbs are unavailable: " + CAUSE.getMessage(), CAUSE);
        }
    }

    /** Verbs objects this process has open now: contexts, memory registrations, channels, queue pairs. */
    public static long[] liveObjects() {
        ensureAvailability();
        long[] out = new long[4];
        VerbsLib.kvm_rdma_live(out);
        return out;
    }

    private static Throwable probe() {
        String enabled = System.getProperty(ENABLED);
        if (enabled != null && enabled.equalsIgnoreCase("false")) {
            return new UnsupportedOperationException("turned off by -D" + ENABLED + "=false");
        }
        if (Verbs.class.getResource("linux-x86_64/libkvmrdma.so") == null) {
            return new UnsupportedOperationException("built without the verbs headers (infiniband/verbs.h): no shim "
                    + "packaged");
        }
        try {
            Loader.load(VerbsLib.class);
        } catch (UnsatisfiedLinkError e) {
            return new UnsupportedOperationException("no verbs library: " + e.getMessage(), e);
        } catch (RuntimeException e) {
            return new UnsupportedOperationException("the verbs shim did not load: " + e, e);
        }
        byte[] cause = new byte[256];
        int devices = VerbsLib.kvm_rdma_probe(cause, cause.length);
        if (devices <= 0) {
            int len = 0;
            while (len < cause.length && cause[len] != 0) {
                len++;
            }
            return new UnsupportedOperationException(new String(cause, 0, len, StandardCharsets.UTF_8));
        }
        return null;
    }

    /** Throws a {@link VerbsException} for a negative code, naming the call and the shim's description. */
    static int check(String call, int code) {
        if (code < 0) {
            throw new VerbsException(call, code, VerbsLib.kvm_rdma_code_name(code, 0),
                    VerbsLib.kvm_rdma_error_string());
        }
        return code;
    }

    /** enum ibv_wc_status, in order: its values are the verbs ABI. */
    private static final String[] COMPLETION_STATUS = {"SUCCESS", "LOC_LEN_ERR", "LOC_QP_OP_ERR", "LOC_EEC_OP_ERR",
        "LOC_PROT_ERR", "WR_FLUSH_ERR", "MW_BIND_ERR", "BAD_RESP_ERR", "LOC_ACCESS_ERR", "REM_INV_REQ_ERR",
        "REM_ACCESS_ERR", "REM_OP_ERR", "RETRY_EXC_ERR", "RNR_RETRY_EXC_ERR", "LOC_RDD_VIOL_ERR", "REM_INV_RD_REQ_ERR",
        "REM_ABORT_ERR", "INV_EECN_ERR", "INV_EEC_STATE_ERR", "FATAL_ERR", "RESP_TIMEOUT_ERR", "GENERAL_ERR"};

    /** A work completion status in words: {@code IBV_WC_REM_ACCESS_ERR (remote access error)}. */
    static String completionStatus(int status) {
        String name = status >= 0 && status < COMPLETION_STATUS.length ? "IBV_WC_" + COMPLETION_STATUS[status]
                : "status " + status;
        return name + " (" + VerbsLib.kvm_rdma_code_name(status, 1) + ")";
    }
}
