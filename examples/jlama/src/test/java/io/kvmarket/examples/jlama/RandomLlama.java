package io.kvmarket.examples.jlama;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Random;

/**
 * A seeded random-weight Llama (grouped-query attention) in the format Jlama loads from a directory: config.json,
 * model.safetensors (HF tensor names, float32) and a byte-fallback BPE tokenizer.json. No weights can be downloaded
 * here, so the tests write their model.
 */
final class RandomLlama {

    private RandomLlama() {
    }

    static final int NSPECIAL = 3;          // <unk>=0 <s>=1 </s>=2
    static final int NCHARS = 0x7F - 0x20; // printable ASCII single-char pieces (so decode() prints text)
    static final int VOCAB = NSPECIAL + 256 + NCHARS; // <0x00>..<0xFF> = 3..258, ' '..'~' = 259..353

    static void write(Path out, int L, int H, int NH, int NKV, int I, int MAXPOS, long seed) throws IOException {
        String dt = "F32";
        int hd = H / NH;
        Files.createDirectories(out);
        Random r = new Random(seed);

        // ---- tensors (HF Llama names; row-major [out, in]) ----
        LinkedHashMap<String, int[]> shapes = new LinkedHashMap<>();
        shapes.put("model.embed_tokens.weight", new int[]{VOCAB, H});
        for (int l = 0; l < L; l++) {
            String p = "model.layers." + l + ".";
            shapes.put(p + "self_attn.q_proj.weight", new int[]{NH * hd, H});
            shapes.put(p + "self_attn.k_proj.weight", new int[]{NKV * hd, H});
            shapes.put(p + "self_attn.v_proj.weight", new int[]{NKV * hd, H});
            shapes.put(p + "self_attn.o_proj.weight", new int[]{H, NH * hd});
            shapes.put(p + "mlp.gate_proj.weight", new int[]{I, H});
            shapes.put(p + "mlp.up_proj.weight", new int[]{I, H});
            shapes.put(p + "mlp.down_proj.weight", new int[]{H, I});
            shapes.put(p + "input_layernorm.weight", new int[]{H});
            shapes.put(p + "post_attention_layernorm.weight", new int[]{H});
        }
        shapes.put("model.norm.weight", new int[]{H});
        shapes.put("lm_head.weight", new int[]{VOCAB, H});

        int esz = dt.equals("BF16") ? 2 : 4;
        StringBuilder hdr = new StringBuilder("{\"__metadata__\":{\"format\":\"pt\"}");
        long off = 0;
        List<float[]> datas = new ArrayList<>();
        for (var e : shapes.entrySet()) {
            int[] s = e.getValue();
            int n = 1; for (int d : s) n *= d;
            float[] v = new float[n];
            boolean norm = e.getKey().endsWith("layernorm.weight") || e.getKey().equals("model.norm.weight");
            double scale = s.length == 2 ? 1.0 / Math.sqrt(s[1]) : 0;
            if (e.getKey().equals("model.embed_tokens.weight")) scale = 1.0;
            for (int i = 0; i < n; i++) v[i] = norm ? (float) (1.0 + 0.1 * r.nextGaussian()) : (float) (r.nextGaussian() * scale);
            datas.add(v);
            long len = (long) n * esz;
            hdr.append(",\"").append(e.getKey()).append("\":{\"dtype\":\"").append(dt).append("\",\"shape\":")
               .append(Arrays.toString(s).replace(" ", "")).append(",\"data_offsets\":[").append(off).append(",").append(off + len).append("]}");
            off += len;
        }
        hdr.append("}");
        byte[] hb = hdr.toString().getBytes(StandardCharsets.UTF_8);
        int pad = (8 - hb.length % 8) % 8; // align data start to 8 bytes (spaces allowed in JSON)
        byte[] hbp = Arrays.copyOf(hb, hb.length + pad); Arrays.fill(hbp, hb.length, hbp.length, (byte) ' ');
        try (var fc = fileChannel(out.resolve("model.safetensors"))) {
            ByteBuffer lb = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(hbp.length).flip();
            fc.write(lb); fc.write(ByteBuffer.wrap(hbp));
            for (float[] v : datas) {
                ByteBuffer bb = ByteBuffer.allocate(v.length * esz).order(ByteOrder.LITTLE_ENDIAN);
                for (float f : v) {
                    if (esz == 4) bb.putFloat(f);
                    else bb.putShort((short) (Float.floatToRawIntBits(f) >>> 16)); // truncating bf16
                }
                bb.flip(); while (bb.hasRemaining()) fc.write(bb);
            }
        }

        // ---- config.json ----
        String cfg = "{\n" +
            "  \"architectures\": [\"LlamaForCausalLM\"],\n" +
            "  \"model_type\": \"llama\",\n" +
            "  \"hidden_size\": " + H + ",\n" +
            "  \"intermediate_size\": " + I + ",\n" +
            "  \"num_attention_heads\": " + NH + ",\n" +
            "  \"num_key_value_heads\": " + NKV + ",\n" +
            "  \"num_hidden_layers\": " + L + ",\n" +
            "  \"vocab_size\": " + VOCAB + ",\n" +
            "  \"max_position_embeddings\": " + MAXPOS + ",\n" +
            "  \"rms_norm_eps\": 1e-05,\n" +
            "  \"rope_theta\": 10000.0,\n" +
            "  \"hidden_act\": \"silu\",\n" +
            "  \"tie_word_embeddings\": false,\n" +
            "  \"torch_dtype\": \"" + (esz == 4 ? "float32" : "bfloat16") + "\",\n" +
            "  \"bos_token_id\": 1,\n" +
            "  \"eos_token_id\": 2\n}\n";
        Files.writeString(out.resolve("config.json"), cfg);

        // ---- tokenizer.json: BPE, byte_fallback, no merges ----
        StringBuilder tk = new StringBuilder();
        tk.append("{\n \"version\": \"1.0\",\n \"added_tokens\": [\n")
          .append("  {\"id\":0,\"content\":\"<unk>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true},\n")
          .append("  {\"id\":1,\"content\":\"<s>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true},\n")
          .append("  {\"id\":2,\"content\":\"</s>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true}\n ],\n")
          .append(" \"normalizer\": null,\n \"pre_tokenizer\": null,\n")
          .append(" \"model\": {\"type\":\"BPE\",\"dropout\":null,\"unk_token\":\"<unk>\",\"fuse_unk\":true,\"byte_fallback\":true,\n  \"vocab\": {")
          .append("\"<unk>\":0,\"<s>\":1,\"</s>\":2");
        for (int b = 0; b < 256; b++) tk.append(String.format(",\"<0x%02X>\":%d", b, NSPECIAL + b));
        for (int ch = 0x20; ch < 0x7F; ch++) {
            String piece = (ch == '"' || ch == '\\') ? "\\" + (char) ch : String.valueOf((char) ch);
            tk.append(",\"").append(piece).append("\":").append(NSPECIAL + 256 + ch - 0x20);
        }
        tk.append("},\n  \"merges\": []\n }\n}\n");
        Files.writeString(out.resolve("tokenizer.json"), tk.toString());
    }

    static java.nio.channels.FileChannel fileChannel(Path p) throws IOException {
        return java.nio.channels.FileChannel.open(p, StandardOpenOption.CREATE, StandardOpenOption.WRITE, StandardOpenOption.TRUNCATE_EXISTING);
    }
}
