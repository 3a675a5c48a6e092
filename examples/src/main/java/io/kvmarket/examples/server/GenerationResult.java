package io.kvmarket.examples.server;

import io.kvmarket.examples.model.ByteTokenizer;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.stream.Collectors;

/**
 * What one {@code /generate} request did, and its response body: one {@code key=value} line per field,
 * {@code output} as space-separated token ids.
 *
 * @param promptTokens   tokens in the prompt
 * @param importedTokens prompt tokens whose KV was imported rather than computed
 * @param ttftMs         request start to first generated token, measured in the server
 * @param outputTokens   generated token ids
 * @param transports     the transports that moved the imported KV ({@code device-ipc}, {@code tcp}); empty when
 *                       nothing was imported
 */
public record GenerationResult(int promptTokens, int importedTokens, double ttftMs, List<Integer> outputTokens,
                               String transports) {

    public GenerationResult {
        outputTokens = List.copyOf(outputTokens);
        if (transports == null || transports.contains("\n")) {
            throw new IllegalArgumentException("transports must be one line: " + transports);
        }
    }

    /** The generated tokens as text. */
    public String outputText() {
        return ByteTokenizer.decode(outputTokens.stream().mapToInt(Integer::intValue).toArray());
    }

    public String toWire() {
        return "prompt_tokens=" + promptTokens + "\n"
                + "imported_tokens=" + importedTokens + "\n"
                + "ttft_ms=" + String.format(Locale.ROOT, "%.3f", ttftMs) + "\n"
                + "output=" + outputTokens.stream().map(String::valueOf).collect(Collectors.joining(" ")) + "\n"
                + "transports=" + transports + "\n";
    }

    /** @throws IllegalArgumentException when a field is missing or malformed */
    public static GenerationResult parse(String wire) {
        Map<String, String> fields = new LinkedHashMap<>();
        for (String line : wire.split("\n")) {
            int eq = line.indexOf('=');
            if (eq > 0) {
                fields.put(line.substring(0, eq), line.substring(eq + 1));
            }
        }
        try {
            List<Integer> output = new ArrayList<>();
            String ids = field(fields, "output").trim();
            if (!ids.isEmpty()) {
                for (String id : ids.split(" ")) {
                    output.add(Integer.parseInt(id));
                }
            }
            return new GenerationResult(Integer.parseInt(field(fields, "prompt_tokens")),
                    Integer.parseInt(field(fields, "imported_tokens")), Double.parseDouble(field(fields, "ttft_ms")),
                    output, fields.getOrDefault("transports", ""));
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("malformed generation result: " + wire, e);
        }
    }

    private static String field(Map<String, String> fields, String name) {
        String v = fields.get(name);
        if (v == null) {
            throw new IllegalArgumentException("generation result lacks " + name + ": " + fields);
        }
        return v;
    }
}
