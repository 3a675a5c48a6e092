package io.kvmarket.node;

/**
 * Node files are mapped into every process of the user, and any of them may truncate one: an access past the new
 * end then faults (SIGBUS), which the JVM throws as an {@link InternalError}. Code over such mappings turns that
 * error, and only that one, into a failure of its own.
 */
public final class MappedFaults {

    private MappedFaults() {
    }

    /** True when {@code e} is the JVM's report of a fault in an access to mapped memory. */
    public static boolean isFault(Throwable e) {
        return e instanceof InternalError && String.valueOf(e.getMessage()).contains("unsafe memory access");
    }

    /**
     * For handlers of a call over mapped memory: rethrows {@code e} when it is an Error other than such a fault, which
     * the JVM may report after the call returned, in its caller.
     */
    public static void rethrowUnlessFault(Throwable e) {
        if (e instanceof Error && !isFault(e)) {
            throw (Error) e;
        }
    }
}
