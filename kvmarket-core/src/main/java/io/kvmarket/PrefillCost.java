package io.kvmarket;

/**
 * What recomputing a prompt's tokens costs the engine, so an import is planned only for the prefix that moves
 * faster than it would be recomputed. Supplied by the engine, which knows its model and hardware.
 */
@FunctionalInterface
public interface PrefillCost {

    /** Nanoseconds to prefill the prompt's first {@code tokens} tokens; must not throw. */
    long nanosToPrefill(int tokens);

    /** A prefill of {@code tokensPerSecond}, linear in the tokens: a fair first estimate below a few thousand tokens. */
    static PrefillCost tokensPerSecond(double tokensPerSecond) {
        if (!(tokensPerSecond > 0)) {
            throw new IllegalArgumentException("tokensPerSecond must be positive, was " + tokensPerSecond);
        }
        return tokens -> (long) (tokens * 1e9 / tokensPerSecond);
    }
}
