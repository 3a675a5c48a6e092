package io.kvmarket.examples.model;

import java.nio.charset.StandardCharsets;

/** Byte-level tokenizer: a text's UTF-8 bytes are its token ids (0..255). Stateless. */
public final class ByteTokenizer {

    /** Tokenizer id and revision, part of the marketplace namespace. */
    public static final String ID = "utf8-bytes-v1";
    public static final int VOCAB = 256;

    private ByteTokenizer() {
    }

    public static int[] encode(String text) {
        byte[] bytes = text.getBytes(StandardCharsets.UTF_8);
        int[] tokens = new int[bytes.length];
        for (int i = 0; i < bytes.length; i++) {
            tokens[i] = bytes[i] & 0xff;
        }
        return tokens;
    }

    /** Decodes token ids as UTF-8; invalid byte sequences become U+FFFD. */
    public static String decode(int[] tokens) {
        byte[] bytes = new byte[tokens.length];
        for (int i = 0; i < tokens.length; i++) {
            if (tokens[i] < 0 || tokens[i] >= VOCAB) {
                throw new IllegalArgumentException("token " + tokens[i] + " at " + i + " outside [0, " + VOCAB + ")");
            }
            bytes[i] = (byte) tokens[i];
        }
        return new String(bytes, StandardCharsets.UTF_8);
    }

    /** True for tokens that are printable ASCII or a newline: text that survives a decode/encode round trip. */
    public static boolean isPlainText(int token) {
        return token == '\n' || (token >= 0x20 && token < 0x7f);
    }
}
