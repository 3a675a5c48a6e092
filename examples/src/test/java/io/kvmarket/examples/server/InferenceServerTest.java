package io.kvmarket.examples.server;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

@Timeout(60)
class InferenceServerTest {

    @TempDir
    Path dir;

    private final HttpClient http = HttpClient.newHttpClient();

    private HttpResponse<String> send(int port, String method, String path, String body) throws Exception {
        HttpRequest.Builder request = HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + path));
        request.method(method, body == null ? HttpRequest.BodyPublishers.noBody() : HttpRequest.BodyPublishers.ofString(body));
        return http.send(request.build(), HttpResponse.BodyHandlers.ofString());
    }

    @Test
    void secondRequestWithTheSamePrefixImportsItAndAnswersTheSame() throws Exception {
        ServerOptions options = ServerOptions.parse("--port", "0", "--node-dir", dir.toString(), "--model", "tiny",
                "--chunk-tokens", "32", "--threads", "2");
        try (InferenceServer server = InferenceServer.start(options)) {
            int port = server.port();
            String prompt = "A question about the handbook, asked twice by two different readers of it.";
            String body = new GenerateRequest(5, prompt).toWire();
            // The server's warm-up already went through the marketplace: compare counters against it.
            String warm = send(port, "GET", "/metrics", null).body();

            GenerationResult first = GenerationResult.parse(send(port, "POST", "/generate", body).body());
            GenerationResult second = GenerationResult.parse(send(port, "POST", "/generate", body).body());

            assertEquals(74, first.promptTokens());
            assertEquals(0, first.importedTokens());
            assertEquals(64, second.importedTokens(), "two full chunks of the 73 tokens before the last");
            assertEquals(5, first.outputTokens().size());
            assertEquals(first.outputTokens(), second.outputTokens());
            String metrics = send(port, "GET", "/metrics", null).body();
            assertEquals(counter(warm, "tokens_imported") + 64, counter(metrics, "tokens_imported"), metrics);
            assertEquals(counter(warm, "chunks_exported") + 2, counter(metrics, "chunks_exported"), metrics);

            assertEquals(400, send(port, "POST", "/generate", "no count line").statusCode());
            assertEquals(405, send(port, "GET", "/generate", null).statusCode());
            HttpResponse<String> stop = send(port, "POST", "/shutdown", null);
            assertEquals(200, stop.statusCode());
            server.awaitStopRequest();
        }
    }

    private static long counter(String metrics, String name) {
        return metrics.lines().filter(l -> l.startsWith(name + "=")).mapToLong(l -> Long.parseLong(l.substring(name.length() + 1)))
                .findFirst().orElseThrow(() -> new AssertionError(name + " missing in " + metrics));
    }

    @Test
    void optionsRoundTripThroughTheirFlags() {
        ServerOptions options = ServerOptions.parse("--port", "8080", "--bind", "10.1.2.3", "--node-dir", "/tmp/x",
                "--marketplace", "off", "--seed", "9", "--model", "tiny", "--chunk-tokens", "64", "--threads", "3");
        assertEquals(List.of("--port", "8080", "--bind", "10.1.2.3", "--node-dir", "/tmp/x", "--marketplace", "off",
                "--seed", "9", "--model", "tiny", "--chunk-tokens", "64", "--threads", "3"), options.toArgs());
        assertEquals(options, ServerOptions.parse(options.toArgs().toArray(String[]::new)));
    }

    @Test
    void wireFormatsRoundTrip() {
        GenerationResult result = new GenerationResult(3400, 3328, 12.3456, List.of(72, 105), "tcp");
        assertEquals("prompt_tokens=3400\nimported_tokens=3328\nttft_ms=12.346\noutput=72 105\ntransports=tcp\n",
                result.toWire());
        assertEquals("", GenerationResult.parse("prompt_tokens=1\nimported_tokens=0\nttft_ms=1\noutput=5\n")
                .transports(), "a server without the transports line: nothing imported over any");
        assertEquals(new GenerationResult(3400, 3328, 12.346, List.of(72, 105), "tcp"),
                GenerationResult.parse(result.toWire()));
        assertEquals("Hi", result.outputText());
        assertEquals(new GenerateRequest(8, "line one\nline two"), GenerateRequest.parse("8\nline one\nline two"));
    }
}
