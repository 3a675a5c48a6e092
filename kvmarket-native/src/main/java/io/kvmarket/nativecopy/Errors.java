package io.kvmarket.nativecopy;

/**
 * The one place that turns native codes into exceptions. Codes (see {@code kvm_copy.h}): 0 or positive
 * is success; {@code -1} invalid argument, {@code -2} host out of memory, {@code -3} internal failure;
 * {@code -(1000 + e)} the CUDA runtime returned {@code cudaError_t e}.
 */
final class Errors {
    static final int EINVAL = -1;
    static final int ENOMEM = -2;
    static final int EINTERNAL = -3;
    static final int CUDA_BASE = 1000;

    /** Names and describes native codes; the real one asks the native library. */
    interface ErrorText {
        String name(int code);

        String description(int code);
    }

    private Errors() {
    }

    static boolean isCudaCode(int code) {
        return code <= -CUDA_BASE;
    }

    /** The {@code cudaError_t} inside a CUDA code, or {@link NativeCopyException#NOT_CUDA}. */
    static int cudaError(int code) {
        return isCudaCode(code) ? -(code + CUDA_BASE) : NativeCopyException.NOT_CUDA;
    }

    /** E.g. {@code cudaErrorInsufficientDriver (cudaError 35, code -1035): CUDA driver version is ...}. */
    static String describe(int code, ErrorText text) {
        String where = isCudaCode(code) ? "cudaError " + cudaError(code) + ", code " + code : "code " + code;
        return text.name(code) + " (" + where + "): " + text.description(code);
    }

    /** Returns {@code code} when it is not negative, otherwise throws the exception it stands for. */
    static int check(String operation, int code, ErrorText text) {
        if (code >= 0) {
            return code;
        }
        throw new NativeCopyException(
                operation, code, cudaError(code), operation + " failed: " + describe(code, text));
    }
}
