package io.kvmarket.testkit;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * A real {@code redis-server} for tests, on a free loopback port, with nothing persisted, and faults injected for
 * real: {@link #kill} (SIGKILL), {@link #pause}/{@link #resume} (SIGSTOP/SIGCONT), {@link #restart}. Tests that need
 * it skip with one line where {@link #installed()} is false; CI installs it.
 */
public final class RedisServer implements AutoCloseable {

    private final Path dir;
    private final int port;
    private final List<String> prefix;
    private final String address;
    private final List<String> extraArgs;
    private Process process;

    private RedisServer(Path dir, int port, List<String> prefix, String address) {
        this(dir, port, prefix, address, List.of());
    }

    private RedisServer(Path dir, int port, List<String> prefix, String address, List<String> extraArgs) {
        this.dir = dir;
        this.port = port;
        this.prefix = prefix;
        this.address = address;
        this.extraArgs = extraArgs;
    }

    /**
     * Starts a node of a Redis Cluster on a free loopback port whose cluster bus port (10,000 above) is free too;
     * {@link RedisCluster} joins such nodes.
     */
    static RedisServer startClusterNode(Path dir) {
        for (int attempt = 0; attempt < 50; attempt++) {
            int port;
            try (ServerSocket s = new ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
                port = s.getLocalPort();
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
            if (port + 10_000 > 65_535) {
                continue;
            }
            try (ServerSocket bus = new ServerSocket(port + 10_000, 1, java.net.InetAddress.getLoopbackAddress())) {
                bus.getLocalPort();
            } catch (IOException taken) {
                continue;
            }
            RedisServer server = new RedisServer(dir, port, List.of(), "127.0.0.1", List.of("--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes-" + port + ".conf", "--cluster-node-timeout", "2000"));
            server.launch();
            return server;
        }
        throw new IllegalStateException("no free port pair for a Redis Cluster node");
    }

    /** True when {@code redis-server} runs here. */
    public static boolean installed() {
        return Commands.succeeds("redis-server", "--version");
    }

    /** Starts a server on the loopback whose working files go to {@code dir}, and waits until it answers. */
    public static RedisServer start(Path dir) {
        int port;
        try (ServerSocket s = new ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            port = s.getLocalPort();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        RedisServer server = new RedisServer(dir, port, List.of(), "127.0.0.1");
        server.launch();
        return server;
    }

    /** Starts a server on {@code address}:6379 through {@code prefix} (in a node of a {@link NetnsCluster}). */
    public static RedisServer start(Path dir, List<String> prefix, String address) {
        RedisServer server = new RedisServer(dir, 6379, prefix, address);
        server.launch();
        return server;
    }

    private void launch() {
        try {
            List<String> command = new java.util.ArrayList<>(prefix);
            command.addAll(List.of("redis-server", "--port", Integer.toString(port), "--bind", address, "--save", "",
                    "--appendonly", "no", "--dir", dir.toString(), "--protected-mode", "no"));
            command.addAll(extraArgs);
            process = new ProcessBuilder(command)
                    .redirectErrorStream(true).redirectOutput(dir.resolve("redis-" + port + ".log").toFile()).start();
        } catch (IOException e) {
            throw new UncheckedIOException("cannot start redis-server", e);
        }
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (!answersPing()) {
            if (System.nanoTime() > deadline || !process.isAlive()) {
                process.destroyForcibly();
                throw new IllegalStateException("redis-server on port " + port + " did not answer; see "
                        + dir.resolve("redis-" + port + ".log"));
            }
            sleep(20);
        }
    }

    public int port() {
        return port;
    }

    public String uri() {
        return "redis://" + address + ":" + port;
    }

    /** True when the server answers PING within a second. */
    public boolean answersPing() {
        try (Socket s = new Socket()) {
            s.connect(new InetSocketAddress(address, port), 1000);
            s.setSoTimeout(1000);
            OutputStream out = s.getOutputStream();
            out.write("PING\r\n".getBytes(StandardCharsets.US_ASCII));
            out.flush();
            InputStream in = s.getInputStream();
            byte[] reply = new byte[7];
            int n = in.readNBytes(reply, 0, 7);
            return n == 7 && new String(reply, StandardCharsets.US_ASCII).equals("+PONG\r\n");
        } catch (IOException e) {
            return false;
        }
    }

    /** SIGKILL: the server is gone, with everything it held. */
    public void kill() throws InterruptedException {
        process.destroyForcibly();
        process.waitFor();
    }

    /** Starts a fresh server on the same port: empty, as after a crash without persistence. */
    public void restart() throws InterruptedException {
        if (process.isAlive()) {
            kill();
        }
        launch();
    }

    /** SIGSTOP: the server holds its connections and answers nothing, as a stalled or partitioned one. */
    public void pause() {
        signal("-STOP");
    }

    /** SIGCONT after {@link #pause}. */
    public void resume() {
        signal("-CONT");
    }

    private void signal(String sig) {
        try {
            new ProcessBuilder("kill", sig, Long.toString(process.pid())).inheritIO().start().waitFor();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    private static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    @Override
    public void close() {
        if (process != null) {
            resume(); // a paused server would not die of SIGTERM
            process.destroyForcibly();
        }
    }
}
