package io.kvmarket.examples.server;

/**
 * Body of {@code POST /generate}: the first line is the number of tokens to generate, everything after the first
 * newline is the prompt, UTF-8, byte for byte.
 */
public record GenerateRequest(int maxNewTokens, String prompt) {

    public GenerateRequest {
        if (maxNewTokens <= 0) {
            throw new IllegalArgumentException("maxNewTokens must be positive, was " + maxNewTokens);
        }
        if (prompt == null || prompt.isEmpty()) {
            throw new IllegalArgumentException("prompt must not be empty");
        }
    }

    public String toWire() {
        return maxNewTokens + "\n" + prompt;
    }

    /** @throws IllegalArgumentException when the body is not a count line followed by a prompt */
    public static GenerateRequest parse(String body) {
        int nl = body.indexOf('\n');
        if (nl < 0) {
            throw new IllegalArgumentException("body must be a max_new_tokens line followed by the prompt");
        }
        try {
            return new GenerateRequest(Integer.parseInt(body.substring(0, nl).trim()), body.substring(nl + 1));
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("first line must be max_new_tokens, was " + body.substring(0, nl));
        }
    }
}
