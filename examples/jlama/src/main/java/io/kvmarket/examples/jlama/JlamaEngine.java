package io.kvmarket.examples.jlama;

import com.github.tjake.jlama.model.AbstractModel;
import com.github.tjake.jlama.tensor.AbstractTensor;
import com.github.tjake.jlama.tensor.KvBufferCache;
import io.kvmarket.ExportResult;
import io.kvmarket.KvMarketplace;
import io.kvmarket.LoadResult;
import io.kvmarket.Match;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.key.Namespace;
import io.kvmarket.kv.KvLayout;
import io.kvmarket.kv.PagedKvCache;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.lang.foreign.MemorySegment;
import java.util.Arrays;
import java.util.function.UnaryOperator;

/**
 * A Jlama model answering prompts as a Jlama server would, with the marketplace in front of prefill:
 * <pre>
 * match(prompt, len - 1) -> load into staging blocks -> copy into the request's Jlama buffer
 *   -> batchForward [imported, len) -> first token's logits (greedy) -> decode the rest one token at a time
 *   -> copy the new positions' KV out to the staging blocks -> export the full chunks
 * </pre>
 * Jlama keeps KV in pages of its own, so the marketplace's blocks are staging memory on the host device: an import
 * lands there and is copied into Jlama's pages, an export copies Jlama's new positions there first
 * ({@link JlamaKv}). The last prompt token is never imported, so its logits are always computed here.
 *
 * <p>One request at a time, and engines sharing a model take turns in its forward pass: Jlama's is not safe to run
 * twice at once on one model (and already uses every core).
 */
public final class JlamaEngine implements AutoCloseable {

    private static final Logger LOG = LoggerFactory.getLogger(JlamaEngine.class);

    /**
     * What a request did: its prompt's size, how many of its tokens were imported and why not more, the time from
     * the call until the imported KV was in Jlama's buffer (match, load and the copy into Jlama's pages) and until
     * the first token's logits, those logits (raw, before any softmax) and the greedy tokens.
     */
    public record Generation(int promptTokens, int tokensImported, String importNote, long importNanos,
                             long firstTokenNanos, float[] firstLogits, int[] tokens) {
    }

    private final AbstractModel model;
    private final KvBufferCache buffers;
    private final int maxTokens;
    /** Null without a marketplace; then so are the staging blocks. */
    private final KvMarketplace marketplace;
    private final HostDevice device;
    private final PagedKvCache staging;
    private final MemorySegment stagingMemory;
    private final int[] table;
    private boolean closed;

    private JlamaEngine(AbstractModel model, int maxTokens, Namespace namespace,
                        UnaryOperator<KvMarketplace.Builder> settings) {
        if (model == null) {
            throw new IllegalArgumentException("no model");
        }
        int limit = usablePositions(model);
        if (maxTokens < 1 || maxTokens > limit) {
            throw new IllegalArgumentException("maxTokens " + maxTokens + " outside [1, " + limit + "]: the model's "
                    + model.getConfig().contextLength + " positions less the last " + (model.getConfig().contextLength
                    - limit) + ", where Jlama's rotary table runs out for its KV heads");
        }
        this.model = model;
        this.maxTokens = maxTokens;
        this.buffers = new KvBufferCache(model);
        if (namespace == null) {
            this.marketplace = null;
            this.device = null;
            this.staging = null;
            this.stagingMemory = null;
            this.table = null;
            return;
        }
        KvLayout layout = namespace.layout();
        KvLayout own = JlamaKv.layout(model, layout.tokensPerBlock());
        if (!layout.equals(own)) {
            throw new IllegalArgumentException("namespace layout " + layout + " is not the model's " + own);
        }
        int blocks = (maxTokens + layout.tokensPerBlock() - 1) / layout.tokensPerBlock();
        this.device = new HostDevice();
        PagedKvCache cache;
        KvMarketplace market;
        try {
            cache = new PagedKvCache(device.allocate(PagedKvCache.requiredBytes(layout, blocks)), layout, blocks);
            // Settings first: the namespace, blocks and device are the engine's.
            KvMarketplace.Builder builder = settings.apply(KvMarketplace.builder());
            if (builder == null) {
                throw new IllegalArgumentException("the settings returned no builder");
            }
            market = builder.namespace(namespace).kvCache(cache).device(device).build();
        } catch (RuntimeException | Error e) {
            device.close();
            throw e;
        }
        this.staging = cache;
        this.stagingMemory = MemorySegment.ofBuffer(device.hostView(cache.buffer()).orElseThrow());
        this.marketplace = market;
        this.table = new int[blocks];
        Arrays.setAll(table, i -> i);
    }

    /** Jlama alone, as the baseline: every request prefills its whole prompt. */
    public static JlamaEngine alone(AbstractModel model, int maxTokens) {
        return new JlamaEngine(model, maxTokens, null, null);
    }

    /**
     * Jlama with the marketplace on the node's host device: {@code namespace} names the model (see
     * {@link JlamaKv#namespace}), {@code settings} sets the rest (registry, chunk size, pool, leases).
     */
    public static JlamaEngine withMarketplace(AbstractModel model, Namespace namespace, int maxTokens,
                                              UnaryOperator<KvMarketplace.Builder> settings) {
        if (namespace == null || settings == null) {
            throw new IllegalArgumentException("a namespace and settings are required");
        }
        return new JlamaEngine(model, maxTokens, namespace, settings);
    }

    /** Positions Jlama 0.8.4 can fill: its rotary table indexed by {@code pos + 2g} runs out for the last ones. */
    static int usablePositions(AbstractModel model) {
        return model.getConfig().contextLength - 2 * (model.getConfig().numberOfKeyValueHeads - 1);
    }

    public KvMarketplace marketplace() {
        return marketplace;
    }

    /** {@link #generate(KvBufferCache.KvBuffer, int[], int)} in a buffer of its own, closed afterwards. */
    public Generation generate(int[] prompt, int newTokens) {
        try (KvBufferCache.KvBuffer kv = buffers.getEphemeralKvBuffer()) {
            return generate(kv, prompt, newTokens);
        }
    }

    /**
     * Generates {@code newTokens} greedy tokens after {@code prompt}, the request's KV in {@code kv}: a buffer of
     * this model's {@code KvBufferCache}, whose positions the request writes from 0 (what it held is overwritten);
     * the request's KV stays there for the caller.
     */
    public synchronized Generation generate(KvBufferCache.KvBuffer kv, int[] prompt, int newTokens) {
        long start = System.nanoTime();
        if (closed) {
            throw new IllegalStateException("engine closed");
        }
        checkRequest(kv, prompt, newTokens);
        int len = prompt.length;
        int[] sequence = Arrays.copyOf(prompt, len + newTokens);
        int imported = 0;
        String importNote = "marketplace off";
        if (marketplace != null) {
            Match match = marketplace.match(prompt, len - 1);
            if (match.tokens() > 0) {
                LoadResult loaded = marketplace.load(match, table).join();
                imported = loaded.tokensImported();
                importNote = (imported == loaded.tokensMatched() ? "loaded all matched"
                        : "loaded " + imported + " of " + loaded.tokensMatched() + ": " + loaded.reason())
                        + (loaded.transports().isEmpty() ? "" : " over " + loaded.transports());
                JlamaKv.fromCache(model, staging, stagingMemory, table, 0, imported, kv);
            } else {
                marketplace.release(match);
                importNote = "no match: " + match.reason();
            }
        }
        long importDone = System.nanoTime() - start;
        float[] firstLogits = new float[model.getConfig().vocabularySize];
        long firstToken;
        // Two forward passes at once on one Jlama model compute wrong numbers: engines sharing a model take turns.
        synchronized (model) {
            try (AbstractTensor<?, ?> out = model.batchForward(Arrays.copyOfRange(prompt, imported, len), imported,
                    kv)) {
                sequence[len] = greedy(out, firstLogits);
            }
            firstToken = System.nanoTime() - start;
            for (int pos = len; pos < sequence.length - 1; pos++) {
                try (AbstractTensor<?, ?> out = model.batchForward(new int[] {sequence[pos]}, pos, kv)) {
                    sequence[pos + 1] = greedy(out, null);
                }
            }
        }
        String exportNote = "";
        if (marketplace != null) {
            // Every position but the last generated token's has KV; the full chunks of it are offered, the prompt's
            // and the answer's, so a follow-up turn starts with both.
            int chunk = marketplace.chunkTokens();
            int exportable = (len + newTokens - 1) / chunk * chunk;
            if (exportable > 0) {
                JlamaKv.toCache(model, kv, imported, exportable, staging, stagingMemory, table);
                ExportResult exported = marketplace.export(sequence, exportable, table);
                exportNote = ", exported " + exported.chunksPublished() + " chunks ("
                        + exported.chunksAlreadyOffered() + " already offered)";
            }
        }
        LOG.info("request: prompt {} tokens, imported {} ({}), first token {} ms, total {} ms{}", len, imported,
                importNote, firstToken / 1_000_000, (System.nanoTime() - start) / 1_000_000, exportNote);
        return new Generation(len, imported, importNote, importDone, firstToken, firstLogits,
                Arrays.copyOfRange(sequence, len, sequence.length));
    }

    private void checkRequest(KvBufferCache.KvBuffer kv, int[] prompt, int newTokens) {
        if (kv == null || prompt == null || prompt.length == 0 || newTokens < 1) {
            throw new IllegalArgumentException("need a buffer, a prompt and at least one new token");
        }
        JlamaKv.checkBuffer(model, kv);
        if (newTokens > maxTokens - prompt.length) {
            throw new IllegalArgumentException("prompt of " + prompt.length + " tokens plus " + newTokens
                    + " new tokens exceeds this engine's " + maxTokens);
        }
        int vocab = model.getConfig().vocabularySize;
        for (int i = 0; i < prompt.length; i++) {
            if (prompt[i] < 0 || prompt[i] >= vocab) {
                throw new IllegalArgumentException("token " + prompt[i] + " at " + i + " outside the vocabulary of "
                        + vocab);
            }
        }
    }

    /** The greedy token of the last row of {@code out}; its raw logits into {@code logits} when given. */
    private int greedy(AbstractTensor<?, ?> out, float[] logits) {
        int vocab = model.getConfig().vocabularySize;
        try (AbstractTensor<?, ?> scratch = model.makeDenseTensor(1, vocab)) {
            int token = model.sample(out.slice(out.shape().first() - 1), 0f, 0f, scratch);
            if (logits != null) {
                for (int i = 0; i < vocab; i++) {
                    logits[i] = scratch.get(0, i);
                }
            }
            return token;
        }
    }

    /** Closes the marketplace (its offers withdrawn) and frees the staging blocks; the model stays the caller's. */
    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        try {
            if (marketplace != null) {
                marketplace.close();
            }
        } finally {
            if (device != null) {
                device.close();
            }
            buffers.close();
        }
    }
}
