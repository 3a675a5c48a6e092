package io.kvmarket.testkit;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.List;
import java.util.concurrent.TimeUnit;

/** The system commands the test launchers run: iproute2, redis-cli, and probes for what is installed. */
final class Commands {

    private Commands() {
    }

    /**
     * Runs {@code command} to its end (at most 30 s) and returns what it printed, stderr included.
     *
     * @throws IllegalStateException when it fails or does not end, with its output
     * @throws UncheckedIOException  when it cannot run at all
     */
    static String output(List<String> command) {
        try {
            Process p = new ProcessBuilder(command).redirectErrorStream(true).start();
            String out = new String(p.getInputStream().readAllBytes());
            if (!p.waitFor(30, TimeUnit.SECONDS) || p.exitValue() != 0) {
                throw new IllegalStateException(String.join(" ", command) + " failed: " + out.strip());
            }
            return out;
        } catch (IOException e) {
            throw new UncheckedIOException(String.join(" ", command) + " could not run", e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted running " + command, e);
        }
    }

    /** True when {@code command} runs here and succeeds: a probe such as {@code redis-server --version}. */
    static boolean succeeds(String... command) {
        try {
            output(List.of(command));
            return true;
        } catch (IllegalStateException | UncheckedIOException e) {
            return false;
        }
    }
}
