package io.kvmarket.node;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;

/**
 * A process on this node, told apart from a later process that reuses its pid by its start time.
 *
 * <p>On Linux the start time is the process's start in clock ticks since boot (field 22 of
 * {@code /proc/PID/stat}): every process reads the same number, even across a step of the wall clock. The JDK's
 * {@code ProcessHandle.Info.startInstant} is not used there, since each JVM derives it from the boot time
 * computed with the wall clock at its own start, so two JVMs on either side of a clock step would disagree and
 * judge each other dead. Elsewhere it falls back to the start instant in epoch milliseconds.
 *
 * @param pid       operating-system process id
 * @param startTime opaque start time (see above), 0 where the OS does not say
 */
public record ProcessIdentity(long pid, long startTime) {

    private static final ProcessIdentity CURRENT = of(ProcessHandle.current());

    public static ProcessIdentity current() {
        return CURRENT;
    }

    static ProcessIdentity of(ProcessHandle handle) {
        long ticks = procStartTicks(handle.pid());
        if (ticks >= 0) {
            return new ProcessIdentity(handle.pid(), ticks);
        }
        return new ProcessIdentity(handle.pid(), handle.info().startInstant().map(Instant::toEpochMilli).orElse(0L));
    }

    /** Field 22 of /proc/PID/stat, or -1 when unreadable (not Linux, or the process is gone). */
    static long procStartTicks(long pid) {
        String stat;
        try {
            stat = Files.readString(Path.of("/proc", Long.toString(pid), "stat"));
        } catch (IOException | RuntimeException e) {
            return -1;
        }
        // The command name (field 2) is in parentheses and may hold spaces or ')': fields resume after the last ')'.
        int close = stat.lastIndexOf(')');
        if (close < 0) {
            return -1;
        }
        String[] rest = stat.substring(close + 2).split(" ");
        // rest[0] is field 3 (state), so field 22 is rest[19].
        try {
            return rest.length > 19 ? Long.parseLong(rest[19]) : -1;
        } catch (NumberFormatException e) {
            return -1;
        }
    }

    /** True while this exact process (pid and start time) runs. Reads /proc on Linux: cache the answer on hot paths. */
    public boolean isAlive() {
        if (this.equals(CURRENT)) {
            return true;
        }
        return ProcessHandle.of(pid)
                .filter(ProcessHandle::isAlive)
                .map(h -> startTime == 0 || of(h).startTime == startTime)
                .orElse(false);
    }
}
