package io.kvmarket.examples.jlama;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;

/**
 * Writes a seeded random-weight Llama (grouped-query attention) in the format Jlama loads from a directory:
 * {@code config.json}, {@code model.safetensors} (Hugging Face tensor names, float32) and a byte-fallback BPE
 * {@code tokenizer.json}. The example's tests and benchmark need a causal LM Jlama runs, and no weights can be
 * downloaded where they run; the numbers do not matter to them, only that every engine of one seed computes the same.
 */
public final class RandomLlama {

    /** {@code <unk>}, {@code <s>} (BOS), {@code </s>} (EOS). */
    static final int SPECIAL_TOKENS = 3;
    /** Printable ASCII as single-character pieces after the 256 byte pieces, so Jlama's decode prints text. */
    static final int CHARACTER_TOKENS = 0x7F - 0x20;
    public static final int VOCAB = SPECIAL_TOKENS + 256 + CHARACTER_TOKENS;

    /** The shape of a model: layers, hidden size, attention heads, KV heads, MLP size, positions. */
    public record Shape(int layers, int hidden, int heads, int kvHeads, int intermediate, int maxPositions) {
        public Shape {
            if (layers < 1 || hidden < 1 || heads < 1 || kvHeads < 1 || intermediate < 1 || maxPositions < 1
                    || hidden % heads != 0 || heads % kvHeads != 0) {
                throw new IllegalArgumentException("not a Llama shape: " + this);
            }
        }

        /** Weights in all: embeddings, every layer's attention, MLP and norms, the final norm and the LM head. */
        public long parameters() {
            long kv = (long) kvHeads * (hidden / heads);
            long layer = 2L * hidden * hidden + 2 * kv * hidden + 3L * intermediate * hidden + 2L * hidden;
            return 2L * VOCAB * hidden + layers * layer + hidden;
        }
    }

    private RandomLlama() {
    }

    /** Writes the model of {@code shape} and {@code seed} into {@code dir} (created when missing). */
    public static void write(Path dir, Shape shape, long seed) throws IOException {
        Files.createDirectories(dir);
        writeWeights(dir.resolve("model.safetensors"), tensorShapes(shape), new Random(seed));
        Files.writeString(dir.resolve("config.json"), config(shape));
        Files.writeString(dir.resolve("tokenizer.json"), tokenizer());
    }

    private static Map<String, int[]> tensorShapes(Shape s) {
        int h = s.hidden();
        int headDim = h / s.heads();
        Map<String, int[]> shapes = new LinkedHashMap<>();
        shapes.put("model.embed_tokens.weight", new int[] {VOCAB, h});
        for (int l = 0; l < s.layers(); l++) {
            String p = "model.layers." + l + ".";
            shapes.put(p + "self_attn.q_proj.weight", new int[] {s.heads() * headDim, h});
            shapes.put(p + "self_attn.k_proj.weight", new int[] {s.kvHeads() * headDim, h});
            shapes.put(p + "self_attn.v_proj.weight", new int[] {s.kvHeads() * headDim, h});
            shapes.put(p + "self_attn.o_proj.weight", new int[] {h, s.heads() * headDim});
            shapes.put(p + "mlp.gate_proj.weight", new int[] {s.intermediate(), h});
            shapes.put(p + "mlp.up_proj.weight", new int[] {s.intermediate(), h});
            shapes.put(p + "mlp.down_proj.weight", new int[] {h, s.intermediate()});
            shapes.put(p + "input_layernorm.weight", new int[] {h});
            shapes.put(p + "post_attention_layernorm.weight", new int[] {h});
        }
        shapes.put("model.norm.weight", new int[] {h});
        shapes.put("lm_head.weight", new int[] {VOCAB, h});
        return shapes;
    }

    /** safetensors: an 8-byte header length, a JSON header of names, dtypes, shapes and offsets, then the data. */
    private static void writeWeights(Path file, Map<String, int[]> shapes, Random random) throws IOException {
        StringBuilder header = new StringBuilder("{\"__metadata__\":{\"format\":\"pt\"}");
        long offset = 0;
        for (Map.Entry<String, int[]> e : shapes.entrySet()) {
            long bytes = 4L * count(e.getValue());
            header.append(",\"").append(e.getKey()).append("\":{\"dtype\":\"F32\",\"shape\":")
                    .append(Arrays.toString(e.getValue()).replace(" ", "")).append(",\"data_offsets\":[")
                    .append(offset).append(',').append(offset + bytes).append("]}");
            offset += bytes;
        }
        header.append('}');
        // The data starts 8-byte aligned; JSON allows the padding spaces.
        while (header.length() % 8 != 0) {
            header.append(' ');
        }
        byte[] json = header.toString().getBytes(StandardCharsets.US_ASCII);
        try (FileChannel out = FileChannel.open(file, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                StandardOpenOption.TRUNCATE_EXISTING)) {
            writeFully(out, ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(json.length).flip());
            writeFully(out, ByteBuffer.wrap(json));
            for (Map.Entry<String, int[]> e : shapes.entrySet()) {
                int[] shape = e.getValue();
                boolean norm = shape.length == 1;
                // Norm weights near 1; matrices scaled by 1/sqrt(fan-in) so activations stay O(1) through the layers.
                double scale = e.getKey().equals("model.embed_tokens.weight") || norm ? 1.0 : 1.0 / Math.sqrt(shape[1]);
                ByteBuffer data = ByteBuffer.allocate(4 * count(shape)).order(ByteOrder.LITTLE_ENDIAN);
                while (data.hasRemaining()) {
                    double g = random.nextGaussian();
                    data.putFloat((float) (norm ? 1.0 + 0.1 * g : g * scale));
                }
                writeFully(out, data.flip());
            }
        }
    }

    private static int count(int[] shape) {
        int n = 1;
        for (int d : shape) {
            n = Math.multiplyExact(n, d);
        }
        return n;
    }

    private static void writeFully(FileChannel out, ByteBuffer data) throws IOException {
        while (data.hasRemaining()) {
            out.write(data);
        }
    }

    private static String config(Shape s) {
        return """
                {
                  "architectures": ["LlamaForCausalLM"],
                  "model_type": "llama",
                  "hidden_size": %d,
                  "intermediate_size": %d,
                  "num_attention_heads": %d,
                  "num_key_value_heads": %d,
                  "num_hidden_layers": %d,
                  "vocab_size": %d,
                  "max_position_embeddings": %d,
                  "rms_norm_eps": 1e-05,
                  "rope_theta": 10000.0,
                  "hidden_act": "silu",
                  "tie_word_embeddings": false,
                  "torch_dtype": "float32",
                  "bos_token_id": 1,
                  "eos_token_id": 2
                }
                """.formatted(s.hidden(), s.intermediate(), s.heads(), s.kvHeads(), s.layers(), VOCAB,
                s.maxPositions());
    }

    /** BPE with byte fallback and no merges: every byte is a token, printable ASCII has a piece of its own. */
    private static String tokenizer() {
        StringBuilder t = new StringBuilder("{\n \"version\": \"1.0\",\n \"added_tokens\": [\n");
        String[] special = {"<unk>", "<s>", "</s>"};
        for (int i = 0; i < special.length; i++) {
            t.append("  {\"id\":").append(i).append(",\"content\":\"").append(special[i])
                    .append("\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,")
                    .append("\"special\":true}").append(i + 1 < special.length ? ",\n" : "\n");
        }
        t.append(" ],\n \"normalizer\": null,\n \"pre_tokenizer\": null,\n \"model\": {\"type\":\"BPE\",")
                .append("\"dropout\":null,\"unk_token\":\"<unk>\",\"fuse_unk\":true,\"byte_fallback\":true,\n")
                .append("  \"vocab\": {\"<unk>\":0,\"<s>\":1,\"</s>\":2");
        for (int b = 0; b < 256; b++) {
            t.append(String.format(",\"<0x%02X>\":%d", b, SPECIAL_TOKENS + b));
        }
        for (char ch = 0x20; ch < 0x7F; ch++) {
            String piece = ch == '"' || ch == '\\' ? "\\" + ch : String.valueOf(ch);
            t.append(",\"").append(piece).append("\":").append(SPECIAL_TOKENS + 256 + ch - 0x20);
        }
        return t.append("},\n  \"merges\": []\n }\n}\n").toString();
    }
}
