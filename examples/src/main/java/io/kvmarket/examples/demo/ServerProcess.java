package io.kvmarket.examples.demo;

import io.kvmarket.examples.server.GenerateRequest;
import io.kvmarket.examples.server.GenerationResult;
import io.kvmarket.examples.server.InferenceServer;
import io.kvmarket.examples.server.ServerOptions;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.TimeUnit;

/**
 * An {@link InferenceServer} in a child JVM on this JVM's class path, and an HTTP client for it. Its log (stderr)
 * goes to a file; its stdin stays a pipe to this process, so the child stops when this process dies.
 */
final class ServerProcess implements AutoCloseable {

    private static final Duration REQUEST_TIMEOUT = Duration.ofMinutes(2);

    private final String name;
    private final Process process;
    private final Path log;
    private final String host;
    /** The servers running now, which this one leaves when it stops. */
    private final Set<ServerProcess> live;
    private final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();
    private int port = -1;

    private ServerProcess(String name, Process process, Path log, String host, Set<ServerProcess> live) {
        this.name = name;
        this.process = process;
        this.log = log;
        this.host = host;
        this.live = live;
    }

    /** Kills the child at once (a signal's cleanup: no time to ask it to stop). */
    void kill() {
        process.destroyForcibly();
    }

    /**
     * Starts the child, its java command run through {@code prefix} (entering a node's namespace; empty on this
     * node) with {@code jvmArgs}; {@link #awaitListening()} waits until it serves.
     */
    static ServerProcess launch(String name, ServerOptions options, Path log, List<String> prefix,
                                List<String> jvmArgs, Set<ServerProcess> live) throws IOException {
        List<String> command = new ArrayList<>(prefix);
        command.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        command.addAll(jvmArgs);
        command.addAll(List.of("-cp", System.getProperty("java.class.path"), InferenceServer.class.getName()));
        command.addAll(options.toArgs());
        Process process = new ProcessBuilder(command)
                .redirectError(ProcessBuilder.Redirect.appendTo(log.toFile()))
                .start();
        ServerProcess server = new ServerProcess(name, process, log, options.bind().getHostAddress(), live);
        live.add(server);
        return server;
    }

    /** Reads the child's stdout up to its {@code LISTENING <port>} line. */
    void awaitListening() throws IOException, InterruptedException {
        BufferedReader out = new BufferedReader(new InputStreamReader(process.getInputStream(), StandardCharsets.UTF_8));
        for (String line = out.readLine(); line != null; line = out.readLine()) {
            if (line.startsWith("LISTENING ")) {
                port = Integer.parseInt(line.substring("LISTENING ".length()).trim());
                return;
            }
        }
        throw new IOException("server " + name + " exited with status " + process.waitFor() + " before listening; see "
                + log);
    }

    String name() {
        return name;
    }

    GenerationResult generate(String prompt, int maxNewTokens) throws IOException, InterruptedException {
        return GenerationResult.parse(send(HttpRequest.newBuilder(uri("/generate"))
                .POST(HttpRequest.BodyPublishers.ofString(new GenerateRequest(maxNewTokens, prompt).toWire(),
                        StandardCharsets.UTF_8))));
    }

    String metrics() throws IOException, InterruptedException {
        return send(HttpRequest.newBuilder(uri("/metrics")).GET());
    }

    private String send(HttpRequest.Builder request) throws IOException, InterruptedException {
        HttpResponse<String> response = http.send(request.timeout(REQUEST_TIMEOUT).build(),
                HttpResponse.BodyHandlers.ofString(StandardCharsets.UTF_8));
        if (response.statusCode() != 200) {
            throw new IOException("server " + name + " answered " + response.statusCode() + ": " + response.body());
        }
        return response.body();
    }

    private URI uri(String path) {
        if (port < 0) {
            throw new IllegalStateException("server " + name + " is not listening yet");
        }
        return URI.create("http://" + host + ":" + port + path);
    }

    /** Asks the child to stop and waits for it; kills it if it does not stop within 30 s. */
    @Override
    public void close() {
        live.remove(this);
        try {
            if (port >= 0) {
                send(HttpRequest.newBuilder(uri("/shutdown")).POST(HttpRequest.BodyPublishers.noBody()));
            }
            process.getOutputStream().close();
            if (process.waitFor(30, TimeUnit.SECONDS)) {
                return;
            }
        } catch (IOException e) {
            // Already gone, or not answering: make sure below.
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        process.destroyForcibly();
    }
}
