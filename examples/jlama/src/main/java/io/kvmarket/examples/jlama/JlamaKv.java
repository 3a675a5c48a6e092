package io.kvmarket.examples.jlama;

import com.github.tjake.jlama.model.AbstractModel;
import com.github.tjake.jlama.safetensors.Config;
import com.github.tjake.jlama.tensor.AbstractTensor;
import com.github.tjake.jlama.tensor.KvBufferCache;
import io.kvmarket.key.Namespace;
import io.kvmarket.kv.DType;
import io.kvmarket.kv.KvLayout;
import io.kvmarket.kv.LayoutOrder;
import io.kvmarket.kv.PagedKvCache;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.Properties;

/**
 * Copies KV between a Jlama session's buffer and blocks of a {@link PagedKvCache} of the same geometry: region
 * {@code 2 x layer + (0 for K, 1 for V)} of a block holds its positions' rows of that layer's K or V, as Jlama keeps
 * them (after RoPE, {@code KV heads x head dim} values per position, in Jlama's working dtype). One bulk copy per run
 * of positions that lie back to back in both: split where a block ends or where Jlama's page does.
 *
 * <p>What Jlama's public API forces: its pages are its own memory (mapped files or heap), so KV crosses between them
 * and the marketplace's memory through the host, a copy each way; a {@code KvBufferCache} that took its pages from
 * a caller's memory would remove it. And the page size is not public: it is read off the page tensors' shape.
 */
public final class JlamaKv {

    /** The Jlama release on the class path, which fixes how its keys are rotated (see {@link #namespace}). */
    static final String JLAMA_VERSION = jlamaVersion();

    private JlamaKv() {
    }

    /** The KV layout of {@code model}'s buffers in blocks of {@code tokensPerBlock} positions. */
    public static KvLayout layout(AbstractModel model, int tokensPerBlock) {
        Config c = model.getConfig();
        DType dtype = switch (model.getWorkingDType()) {
            case F32 -> DType.FLOAT32;
            case BF16 -> DType.BFLOAT16;
            default -> throw new IllegalArgumentException("KV in " + model.getWorkingDType() + " is not supported");
        };
        return KvLayout.of(c.numberOfLayers, c.numberOfKeyValueHeads, c.headSize, dtype, tokensPerBlock,
                LayoutOrder.LAYER_MAJOR);
    }

    /**
     * The namespace of {@code model}'s KV. Jlama's keys are not another engine's: it rotates KV head {@code g} as if
     * at position {@code pos + 2g}, so the revision names the Jlama release; the tokenizer is named by the SHA-256
     * of {@code modelDir}'s {@code tokenizer.json} (and {@code tokenizer_config.json} when there), and the layout
     * carries the working dtype.
     *
     * @param weightsRevision whatever changes the weights' numbers: the checkpoint's revision and any quantization
     *                        the model was loaded with
     * @throws UncheckedIOException when the tokenizer cannot be read
     */
    public static Namespace namespace(AbstractModel model, Path modelDir, String modelId, String weightsRevision,
                                      int tokensPerBlock) {
        return Namespace.of(modelId, weightsRevision + "; jlama-core " + JLAMA_VERSION,
                tokenizerDigest(modelDir), layout(model, tokensPerBlock));
    }

    private static String tokenizerDigest(Path modelDir) {
        try {
            MessageDigest sha = MessageDigest.getInstance("SHA-256");
            sha.update(Files.readAllBytes(modelDir.resolve("tokenizer.json")));
            Path config = modelDir.resolve("tokenizer_config.json");
            if (Files.exists(config)) {
                sha.update(Files.readAllBytes(config));
            }
            return "sha256:" + HexFormat.of().formatHex(sha.digest());
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read the tokenizer of " + modelDir, e);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("every JDK has SHA-256", e);
        }
    }

    private static String jlamaVersion() {
        try (InputStream in = AbstractModel.class.getResourceAsStream(
                "/META-INF/maven/com.github.tjake/jlama-core/pom.properties")) {
            if (in == null) {
                return "unknown";
            }
            Properties p = new Properties();
            p.load(in);
            return p.getProperty("version", "unknown");
        } catch (IOException e) {
            return "unknown";
        }
    }

    /** Copies positions {@code [from, to)} of {@code kv} into {@code blocks} of the cache, whose memory is given. */
    public static void toCache(AbstractModel model, KvBufferCache.KvBuffer kv, int from, int to, PagedKvCache cache,
                               MemorySegment cacheMemory, int[] blocks) {
        copy(model, kv, from, to, cache, cacheMemory, blocks, true);
    }

    /** Copies positions {@code [from, to)} held by {@code blocks} of the cache into {@code kv}. */
    public static void fromCache(AbstractModel model, PagedKvCache cache, MemorySegment cacheMemory, int[] blocks,
                                 int from, int to, KvBufferCache.KvBuffer kv) {
        copy(model, kv, from, to, cache, cacheMemory, blocks, false);
    }

    /**
     * Refuses a buffer not laid out for {@code model}: Jlama's buffers do not say whose they are, and another model's
     * rows are of another width or dtype, or it has fewer layers.
     */
    static void checkBuffer(AbstractModel model, KvBufferCache.KvBuffer kv) {
        if (kv == null) {
            throw new IllegalArgumentException("no buffer");
        }
        Config c = model.getConfig();
        AbstractTensor<?, ?> first;
        try {
            first = kv.getKeyTensorsUptoPosition(0, 0)[0];
            kv.getKeyTensorsUptoPosition(c.numberOfLayers - 1, 0);
        } catch (ArrayIndexOutOfBoundsException e) {
            throw new IllegalArgumentException("the buffer has fewer layers than the model's " + c.numberOfLayers, e);
        }
        int row = c.numberOfKeyValueHeads * c.headSize;
        if (first.shape().last() != row || first.dType() != model.getWorkingDType()) {
            throw new IllegalArgumentException("the buffer's rows are " + first.shape().last() + " " + first.dType()
                    + " values, the model's " + row + " " + model.getWorkingDType() + ": a buffer of another model");
        }
    }

    private static void copy(AbstractModel model, KvBufferCache.KvBuffer kv, int from, int to, PagedKvCache cache,
                             MemorySegment cacheMemory, int[] blocks, boolean toCache) {
        if (cache == null || cacheMemory == null || blocks == null) {
            throw new IllegalArgumentException("a cache, its memory and blocks are required");
        }
        checkBuffer(model, kv);
        KvLayout layout = cache.layout();
        if (!layout.equals(layout(model, layout.tokensPerBlock()))) {
            throw new IllegalArgumentException("cache layout " + layout + " is not the model's "
                    + layout(model, layout.tokensPerBlock()));
        }
        int perBlock = layout.tokensPerBlock();
        if (from < 0 || from > to || to > model.getConfig().contextLength
                || blocks.length < (to + perBlock - 1) / perBlock) {
            throw new IllegalArgumentException("positions [" + from + ", " + to + ") do not fit " + blocks.length
                    + " blocks of " + perBlock + " or the model's " + model.getConfig().contextLength + " positions");
        }
        if (cacheMemory.byteSize() < cache.buffer().size()) {
            throw new IllegalArgumentException("the memory given holds " + cacheMemory.byteSize()
                    + " bytes, the cache " + cache.buffer().size());
        }
        for (int b = from / perBlock; b < (to + perBlock - 1) / perBlock; b++) {
            if (blocks[b] < 0 || blocks[b] >= cache.numBlocks()) {
                throw new IllegalArgumentException("block " + blocks[b] + " outside [0, " + cache.numBlocks() + ")");
            }
        }
        if (from == to) {
            return;
        }
        long row = (long) layout.kvHeads() * layout.headDim() * layout.dtype().bytes();
        for (int l = 0; l < layout.layers(); l++) {
            for (int k = 0; k < 2; k++) {
                AbstractTensor<?, ?>[] pages = pages(kv, l, k, to - 1);
                int perPage = pages[0].shape().first();
                for (int p = from; p < to; ) {
                    int run = Math.min(Math.min(to - p, perBlock - p % perBlock), perPage - p % perPage);
                    MemorySegment page = pages[p / perPage].getMemorySegment()
                            .asSlice((long) (p % perPage) * row, run * row);
                    long at = cache.regionOffset(blocks[p / perBlock], 2 * l + k) + (long) (p % perBlock) * row;
                    if (toCache) {
                        MemorySegment.copy(page, 0, cacheMemory, at, run * row);
                    } else {
                        MemorySegment.copy(cacheMemory, at, page, 0, run * row);
                    }
                    p += run;
                }
            }
        }
    }

    /** Layer {@code l}'s K ({@code k == 0}) or V pages up to the one holding position {@code last}. */
    private static AbstractTensor<?, ?>[] pages(KvBufferCache.KvBuffer kv, int l, int k, int last) {
        AbstractTensor<?, ?> first = k == 0 ? kv.getKeyTensorsUptoPosition(l, 0)[0]
                : kv.getValTensorsUptoPosition(l, 0)[0];
        int perPage = first.shape().first();
        // Jlama 0.8.4 names every page *UptoPosition creates after the last page (pages backed by files would then
        // share one file): making each page by a position in it first gives every page its own name.
        for (int p = perPage; p <= last; p += perPage) {
            if (k == 0) {
                kv.getKeyTensorForPosition(l, p);
            } else {
                kv.getValTensorForPosition(l, p);
            }
        }
        return k == 0 ? kv.getKeyTensorsUptoPosition(l, last) : kv.getValTensorsUptoPosition(l, last);
    }
}
