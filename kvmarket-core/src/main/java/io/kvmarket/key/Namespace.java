package io.kvmarket.key;

import io.kvmarket.kv.KvLayout;

import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;

/**
 * Everything that must match for KV to be interchangeable. Its canonical encoding is hashed into the root of
 * every chunk key, so KV of a different model, revision, tokenizer, layout, adapter or tenant never matches.
 *
 * @param modelId         model identifier, e.g. {@code meta-llama/Llama-3.1-8B}
 * @param weightsRevision revision of the weights (commit, checksum)
 * @param tokenizer       tokenizer identifier and revision
 * @param layout          KV cache layout
 * @param adapterId       LoRA adapter id, empty when none
 * @param tenantSalt      per-tenant salt, empty when the cache is shared by every tenant
 */
public record Namespace(String modelId, String weightsRevision, String tokenizer, KvLayout layout, String adapterId,
                        String tenantSalt) {

    private static final String ENCODING_TAG = "kvmarket/namespace/v1";

    public Namespace {
        require("modelId", modelId);
        require("weightsRevision", weightsRevision);
        require("tokenizer", tokenizer);
        if (layout == null) {
            throw new IllegalArgumentException("layout is required");
        }
        adapterId = adapterId == null ? "" : adapterId;
        tenantSalt = tenantSalt == null ? "" : tenantSalt;
    }

    /** A namespace without adapter and tenant salt. */
    public static Namespace of(String modelId, String weightsRevision, String tokenizer, KvLayout layout) {
        return new Namespace(modelId, weightsRevision, tokenizer, layout, "", "");
    }

    public Namespace withAdapter(String adapter) {
        return new Namespace(modelId, weightsRevision, tokenizer, layout, adapter, tenantSalt);
    }

    public Namespace withTenantSalt(String salt) {
        return new Namespace(modelId, weightsRevision, tokenizer, layout, adapterId, salt);
    }

    /**
     * Canonical, versioned byte encoding: every string as u32 little-endian byte length + UTF-8, every number as
     * u32 little-endian, enums by name. Stable across processes, machines and JVM versions.
     */
    public byte[] canonicalEncoding() {
        ByteArrayOutputStream out = new ByteArrayOutputStream(256);
        writeString(out, ENCODING_TAG);
        writeString(out, modelId);
        writeString(out, weightsRevision);
        writeString(out, tokenizer);
        writeLayout(out, layout);
        writeString(out, adapterId);
        writeString(out, tenantSalt);
        return out.toByteArray();
    }

    /** Canonical encoding of a layout alone; its hash is the layout fingerprint carried by every offer. */
    public static byte[] canonicalEncoding(KvLayout layout) {
        ByteArrayOutputStream out = new ByteArrayOutputStream(64);
        writeLayout(out, layout);
        return out.toByteArray();
    }

    private static void writeLayout(ByteArrayOutputStream out, KvLayout layout) {
        writeInt(out, layout.layers());
        writeInt(out, layout.kvHeads());
        writeInt(out, layout.headDim());
        writeString(out, layout.dtype().name());
        writeInt(out, layout.tokensPerBlock());
        writeString(out, layout.order().name());
        writeInt(out, layout.tpRank());
        writeInt(out, layout.tpSize());
    }

    private static void writeString(ByteArrayOutputStream out, String s) {
        byte[] bytes = s.getBytes(StandardCharsets.UTF_8);
        writeInt(out, bytes.length);
        out.writeBytes(bytes);
    }

    private static void writeInt(ByteArrayOutputStream out, int v) {
        out.writeBytes(ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN).putInt(v).array());
    }

    private static void require(String name, String value) {
        if (value == null || value.isEmpty()) {
            throw new IllegalArgumentException(name + " is required");
        }
    }
}
