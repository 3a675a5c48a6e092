package io.kvmarket.examples.server;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/**
 * An HTTP front for one {@link InferenceEngine}, on the loopback interface:
 * <ul>
 *   <li>{@code POST /generate}: body as {@link GenerateRequest}, response as {@link GenerationResult};</li>
 *   <li>{@code GET /metrics}: the marketplace counters, {@code key=value} lines;</li>
 *   <li>{@code POST /shutdown}: stops the server.</li>
 * </ul>
 * Requests run one at a time on a single handler thread, like an engine with batch size one, so the TTFT of one
 * request never includes another's compute.
 *
 * <p>{@link #main} prints {@code LISTENING <port>} on stdout once it serves, and stops cleanly (marketplace, then
 * registry, then device) on {@code POST /shutdown}, at end of stdin, or on SIGTERM. End of stdin stops it so that
 * a parent that dies takes its servers with it; give it an open stdin (a terminal or a pipe) to keep it running.
 */
public final class InferenceServer implements AutoCloseable {

    private static final Logger LOG = LoggerFactory.getLogger(InferenceServer.class);

    private final InferenceEngine engine;
    private final HttpServer http;
    private final ExecutorService handler;
    private final CountDownLatch stopRequested = new CountDownLatch(1);
    private boolean closed;

    private InferenceServer(InferenceEngine engine, HttpServer http, ExecutorService handler) {
        this.engine = engine;
        this.http = http;
        this.handler = handler;
    }

    /** Builds and warms up the engine, then serves on {@code options.port()}. */
    public static InferenceServer start(ServerOptions options) throws IOException {
        InferenceEngine engine = new InferenceEngine(options.engine());
        try {
            engine.warmUp();
            HttpServer http = HttpServer.create(new InetSocketAddress(options.bind(), options.port()), 16);
            ExecutorService handler = Executors.newSingleThreadExecutor(r -> new Thread(r, "inference-http"));
            InferenceServer server = new InferenceServer(engine, http, handler);
            http.createContext("/generate", server::generate);
            http.createContext("/metrics", server::metrics);
            http.createContext("/shutdown", server::shutdown);
            http.setExecutor(handler);
            http.start();
            LOG.info("serving on port {}", server.port());
            return server;
        } catch (IOException | RuntimeException e) {
            engine.close();
            throw e;
        }
    }

    public int port() {
        return http.getAddress().getPort();
    }

    /** Blocks until {@code POST /shutdown} or {@link #requestStop()}. */
    public void awaitStopRequest() throws InterruptedException {
        stopRequested.await();
    }

    public void requestStop() {
        stopRequested.countDown();
    }

    private void generate(HttpExchange exchange) throws IOException {
        if (!"POST".equals(exchange.getRequestMethod())) {
            respond(exchange, 405, "use POST\n");
            return;
        }
        GenerateRequest request;
        try (InputStream in = exchange.getRequestBody()) {
            request = GenerateRequest.parse(new String(in.readAllBytes(), StandardCharsets.UTF_8));
        } catch (IllegalArgumentException e) {
            respond(exchange, 400, e.getMessage() + "\n");
            return;
        }
        try {
            respond(exchange, 200, engine.generate(request.prompt(), request.maxNewTokens()).toWire());
        } catch (IllegalArgumentException e) {
            respond(exchange, 400, e.getMessage() + "\n");
        } catch (RuntimeException e) {
            LOG.error("generate failed", e);
            respond(exchange, 500, e + "\n");
        }
    }

    private void metrics(HttpExchange exchange) throws IOException {
        if (!"GET".equals(exchange.getRequestMethod())) {
            respond(exchange, 405, "use GET\n");
            return;
        }
        respond(exchange, 200, engine.metricsText());
    }

    private void shutdown(HttpExchange exchange) throws IOException {
        if (!"POST".equals(exchange.getRequestMethod())) {
            respond(exchange, 405, "use POST\n");
            return;
        }
        respond(exchange, 200, "stopping\n");
        requestStop();
    }

    private static void respond(HttpExchange exchange, int status, String body) throws IOException {
        byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
        exchange.getResponseHeaders().set("Content-Type", "text/plain; charset=utf-8");
        exchange.sendResponseHeaders(status, bytes.length);
        try (OutputStream out = exchange.getResponseBody()) {
            out.write(bytes);
        }
    }

    /** Stops serving, then closes the engine: marketplace before registry before device. Idempotent. */
    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        http.stop(0);
        handler.shutdown();
        engine.close();
        LOG.info("stopped");
    }

    public static void main(String[] args) throws Exception {
        ServerOptions options;
        try {
            options = ServerOptions.parse(args);
        } catch (IllegalArgumentException e) {
            System.err.println("InferenceServer: " + e.getMessage());
            System.exit(2);
            return;
        }
        InferenceServer server = start(options);
        Runtime.getRuntime().addShutdownHook(new Thread(server::close, "inference-shutdown"));
        Thread stdinWatch = new Thread(() -> {
            try {
                while (System.in.read() >= 0) {
                    // input is ignored; only its end matters
                }
            } catch (IOException e) {
                LOG.info("stdin failed ({}); treating it as closed", e.toString());
            }
            server.requestStop();
        }, "stdin-eof-watch");
        stdinWatch.setDaemon(true);
        stdinWatch.start();
        System.out.println("LISTENING " + server.port());
        System.out.flush();
        server.awaitStopRequest();
        server.close();
    }
}
