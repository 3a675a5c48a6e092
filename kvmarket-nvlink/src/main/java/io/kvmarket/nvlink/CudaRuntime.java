package io.kvmarket.nvlink;

import io.kvmarket.nativecopy.NativeCopy;
import org.bytedeco.cuda.global.cudart;
import org.bytedeco.javacpp.Loader;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Whether the CUDA device can be used here, probed once and kept with its cause, in the manner of Netty's
 * {@code Epoll}: the CUDA runtime must load (JavaCPP Presets for CUDA, against the system's libcudart), see at
 * least one device through a working driver, and kvmarket-native must offer its batched copy. Probing never
 * throws; callers ask {@link #isAvailable()}, {@link #ensureAvailability()} or {@link #unavailabilityCause()}.
 */
public final class CudaRuntime {

    private static final Logger LOG = LoggerFactory.getLogger(CudaRuntime.class);
    /** {@code -Dkvmarket.cuda=false} forces the fallback to the host device even where CUDA works. */
    public static final String ENABLED_PROPERTY = "kvmarket.cuda";
    private static final Throwable UNAVAILABILITY_CAUSE = probe();
    /** kvmarket-native's probe counted the devices already; available implies it is available. */
    private static final int DEVICE_COUNT = UNAVAILABILITY_CAUSE == null ? NativeCopy.deviceCount() : 0;

    private CudaRuntime() {
    }

    public static boolean isAvailable() {
        return UNAVAILABILITY_CAUSE == null;
    }

    /** @throws UnsatisfiedLinkError carrying the cause when CUDA cannot be used */
    public static void ensureAvailability() {
        if (UNAVAILABILITY_CAUSE != null) {
            throw (UnsatisfiedLinkError) new UnsatisfiedLinkError("CUDA device unavailable: "
                    + UNAVAILABILITY_CAUSE.getMessage()).initCause(UNAVAILABILITY_CAUSE);
        }
    }

    /** Null when available. */
    public static Throwable unavailabilityCause() {
        return UNAVAILABILITY_CAUSE;
    }

    public static int deviceCountIfAvailable() {
        return DEVICE_COUNT;
    }

    /** CUDA's name for an error code. */
    static String errorString(int code) {
        return cudart.cudaGetErrorString(code).getString() + " (" + code + ")";
    }

    private static Throwable probe() {
        if ("false".equalsIgnoreCase(System.getProperty(ENABLED_PROPERTY, "true").trim())) {
            // Like Netty's noNative: CUDA is not even loaded, and the host device is used.
            LOG.info("CUDA device disabled by -D{}=false", ENABLED_PROPERTY);
            return new IllegalStateException("disabled by -D" + ENABLED_PROPERTY + "=false");
        }
        Throwable cause;
        try {
            Loader.load(cudart.class);
            int[] count = new int[1];
            int err = cudart.cudaGetDeviceCount(count);
            if (err != cudart.cudaSuccess) {
                cause = new IllegalStateException("cudaGetDeviceCount failed: " + errorString(err));
            } else if (count[0] == 0) {
                cause = new IllegalStateException("no CUDA device");
            } else if (!NativeCopy.isAvailable()) {
                cause = new IllegalStateException("kvmarket-native's batched copy is unavailable: "
                        + NativeCopy.unavailabilityCause(), NativeCopy.unavailabilityCause());
            } else {
                cause = null;
            }
        } catch (Throwable t) { // UnsatisfiedLinkError, NoClassDefFoundError from a missing runtime library
            Throwable root = t;
            while (root.getCause() != null && root.getCause() != root) {
                root = root.getCause(); // the library that failed and why, where JavaCPP wraps it
            }
            cause = new IllegalStateException("cannot load the CUDA runtime through JavaCPP (it needs"
                    + " libcudart.so.13 on the library path and the NVIDIA driver's libcuda.so.1): " + t
                    + (root != t ? "; cause: " + root : ""), t);
        }
        if (cause != null) {
            LOG.info("CUDA device unavailable: {}", cause.toString());
        }
        return cause;
    }
}
