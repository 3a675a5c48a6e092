package io.kvmarket.examples.server;

import io.kvmarket.testkit.ChildJvm;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;

/** An {@link InferenceServer} in a child JVM, for tests that need a second process on the node. */
final class ChildServer implements AutoCloseable {

    private final ChildJvm child;
    private final String host;
    private final int port;
    private final HttpClient http = HttpClient.newHttpClient();

    ChildServer(String... args) {
        this(ChildJvm.start(InferenceServer.class, args), "127.0.0.1");
    }

    /** A server already started in {@code child}, serving HTTP on {@code host}. */
    ChildServer(ChildJvm child, String host) {
        this.child = child;
        this.host = host;
        try {
            port = Integer.parseInt(child.awaitLine("LISTENING ", Duration.ofSeconds(60)).substring("LISTENING ".length()));
        } catch (RuntimeException e) {
            child.close();
            throw e;
        }
    }

    GenerationResult generate(String prompt, int maxNewTokens) throws IOException, InterruptedException {
        URI uri = URI.create("http://" + host + ":" + port + "/generate");
        HttpResponse<String> response = http.send(HttpRequest.newBuilder(uri)
                        .POST(HttpRequest.BodyPublishers.ofString(new GenerateRequest(maxNewTokens, prompt).toWire()))
                        .build(),
                HttpResponse.BodyHandlers.ofString());
        if (response.statusCode() != 200) {
            throw new IOException("generate answered " + response.statusCode() + ": " + response.body());
        }
        return GenerationResult.parse(response.body());
    }

    /** Closes the child's stdin, which stops it, and returns its exit status. */
    int stop() throws IOException, InterruptedException {
        return child.stop(Duration.ofSeconds(30));
    }

    @Override
    public void close() {
        child.close();
    }
}
