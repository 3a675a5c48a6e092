package io.kvmarket.testkit;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

/**
 * Another process on the node: {@code main} run by this JVM's java with this JVM's class path, its stderr
 * joined to ours. The child says it is ready by printing a line; closing its stdin is how tests ask it to stop,
 * and {@link #kill} is SIGKILL (no shutdown hooks, no close()).
 */
public final class ChildJvm implements AutoCloseable {

    /** Marks the end of the child's output in {@link #lines}. */
    private static final String END = new String("end of output");

    private final Process process;
    /** Every line the child prints, read by one daemon thread, so no wait that times out loses a line. */
    private final BlockingQueue<String> lines = new LinkedBlockingQueue<>();

    private ChildJvm(Process process) {
        this.process = process;
        Thread reader = new Thread(() -> {
            try (BufferedReader out = new BufferedReader(new InputStreamReader(process.getInputStream(),
                    StandardCharsets.UTF_8))) {
                for (String l = out.readLine(); l != null; l = out.readLine()) {
                    lines.add(l);
                }
            } catch (IOException e) {
                // the child is gone; its end is marked below
            } finally {
                lines.add(END);
            }
        }, "child-jvm-" + process.pid() + "-stdout");
        reader.setDaemon(true);
        reader.start();
    }

    /**
     * Starts {@code main} with {@code jvmArgs} (for example {@code -Dkvmarket.dir=...}) and {@code args}; the child
     * inherits this JVM's {@code kvmarket.dir} unless {@code jvmArgs} set their own.
     */
    public static ChildJvm start(Class<?> main, List<String> jvmArgs, String... args) {
        return start(List.of(), main, jvmArgs, args);
    }

    /** As above, the java command run through {@code prefix} (for example entering a network namespace). */
    public static ChildJvm start(List<String> prefix, Class<?> main, List<String> jvmArgs, String... args) {
        List<String> command = new ArrayList<>(prefix);
        command.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        // A test run's node directory reaches its children too, so they stay out of the user's own; jvmArgs win.
        String nodeDir = System.getProperty("kvmarket.dir");
        if (nodeDir != null) {
            command.add("-Dkvmarket.dir=" + nodeDir);
        }
        command.addAll(jvmArgs);
        command.add("-cp");
        command.add(System.getProperty("java.class.path"));
        command.add(main.getName());
        command.addAll(List.of(args));
        try {
            return new ChildJvm(new ProcessBuilder(command).redirectError(ProcessBuilder.Redirect.INHERIT).start());
        } catch (IOException e) {
            throw new UncheckedIOException("cannot start " + main.getName(), e);
        }
    }

    public static ChildJvm start(Class<?> main, String... args) {
        return start(main, List.of(), args);
    }

    /**
     * The child's next line of stdout that starts with {@code prefix}, skipping others.
     *
     * @throws IllegalStateException when the child exits, or {@code timeout} passes, first
     */
    public String awaitLine(String prefix, Duration timeout) {
        long deadline = System.nanoTime() + timeout.toNanos();
        try {
            while (true) {
                String l = lines.poll(Math.max(0, deadline - System.nanoTime()), TimeUnit.NANOSECONDS);
                if (l == null) {
                    throw new IllegalStateException("child printed no line starting with " + prefix + " within "
                            + timeout);
                }
                if (l == END) {
                    lines.add(END); // later waits see the end too
                    throw new IllegalStateException("child exited before printing " + prefix);
                }
                if (l.startsWith(prefix)) {
                    return l;
                }
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted waiting for the child", e);
        }
    }

    /** Writes one line to the child's stdin. */
    public void send(String line) {
        try {
            process.getOutputStream().write((line + "\n").getBytes(StandardCharsets.UTF_8));
            process.getOutputStream().flush();
        } catch (IOException e) {
            throw new UncheckedIOException("the child no longer reads its stdin", e);
        }
    }

    public long pid() {
        return process.pid();
    }

    /** Closes the child's stdin, which asks it to stop, and waits up to {@code timeout} for its exit status. */
    public int stop(Duration timeout) throws IOException, InterruptedException {
        process.getOutputStream().close();
        if (!process.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS)) {
            throw new IOException("child did not stop within " + timeout + " of the end of its stdin");
        }
        return process.exitValue();
    }

    /** SIGKILL, then waits for the child to be gone. */
    public void kill() throws InterruptedException {
        process.destroyForcibly();
        process.waitFor();
    }

    @Override
    public void close() {
        process.destroyForcibly();
    }
}
