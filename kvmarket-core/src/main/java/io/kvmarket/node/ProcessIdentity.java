package io.kvmarket.node;

import java.time.Instant;

/**
 * A process on this node, told apart from a later process that reuses its pid by its start time.
 *
 * @param pid     operating-system process id
 * @param startMs start time in epoch milliseconds as the OS reports it, 0 where the OS does not say
 */
public record ProcessIdentity(long pid, long startMs) {

    private static final ProcessIdentity CURRENT = of(ProcessHandle.current());

    public static ProcessIdentity current() {
        return CURRENT;
    }

    private static ProcessIdentity of(ProcessHandle handle) {
        return new ProcessIdentity(handle.pid(), handle.info().startInstant().map(Instant::toEpochMilli).orElse(0L));
    }

    /** True while this exact process (pid and start time) runs. Reads /proc on Linux: cache the answer on hot paths. */
    public boolean isAlive() {
        if (this.equals(CURRENT)) {
            return true;
        }
        return ProcessHandle.of(pid)
                .filter(ProcessHandle::isAlive)
                .map(h -> startMs == 0 || of(h).startMs == startMs)
                .orElse(false);
    }
}
