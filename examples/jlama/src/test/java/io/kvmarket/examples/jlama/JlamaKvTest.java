package io.kvmarket.examples.jlama;

import com.github.tjake.jlama.model.AbstractModel;
import com.github.tjake.jlama.model.ModelSupport;
import com.github.tjake.jlama.tensor.AbstractTensor;
import com.github.tjake.jlama.tensor.KvBufferCache;
import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.kv.PagedKvCache;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Optional;
import java.util.Random;
import java.util.UUID;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/**
 * Jlama's KV through a paged KV cache and back, on a random-weight Llama Jlama loads itself: the KV of a prompt's
 * prefix, copied out of one session into scattered blocks and into a fresh session, is byte for byte the KV Jlama
 * computed, and the rest of the prompt prefilled from there gives the next token of a full prefill.
 */
@Timeout(300)
class JlamaKvTest {

    static final int PREFIX = 32;
    static final int PROMPT = 40;

    @TempDir
    static Path dir;
    static AbstractModel model;

    @BeforeAll
    static void load() throws Exception {
        Path weights = Files.createDirectories(dir.resolve("model"));
        RandomLlama.write(weights, new RandomLlama.Shape(2, 64, 4, 2, 128, 512), 42);
        model = ModelSupport.loadModel(weights.toFile(), Files.createDirectories(dir.resolve("work")).toFile(),
                com.github.tjake.jlama.safetensors.DType.F32, com.github.tjake.jlama.safetensors.DType.F32,
                Optional.empty(), Optional.empty());
    }

    @AfterAll
    static void close() {
        if (model != null) {
            model.close();
        }
    }

    private static int[] prompt() {
        int[] t = new int[PROMPT];
        Random r = new Random(7);
        t[0] = model.getConfig().bosToken;
        for (int i = 1; i < PROMPT; i++) {
            t[i] = 3 + r.nextInt(256);
        }
        return t;
    }

    /** Raw logits of the last row of a forward pass, and the greedy token as {@code sample} picks it. */
    private static float[] lastLogits(AbstractTensor<?, ?> out) {
        int vocab = model.getConfig().vocabularySize;
        try (AbstractTensor<?, ?> logits = model.makeDenseTensor(1, vocab)) {
            int greedy = model.sample(out.slice(out.shape().first() - 1), 0f, 0f, logits);
            float[] v = new float[vocab + 1];
            for (int i = 0; i < vocab; i++) {
                v[i] = logits.get(0, i);
            }
            v[vocab] = greedy;
            return v;
        }
    }

    @Test
    void aPrefixThroughPagedBlocksIsJlamasOwnKvAndPrefillGoesOnFromIt() {
        int[] tokens = prompt();
        KvBufferCache cache = new KvBufferCache(model);
        try (HostDevice device = new HostDevice(dir.resolve("device"))) {
            PagedKvCache blocks = new PagedKvCache(device.allocate(PagedKvCache.requiredBytes(
                    JlamaKv.layout(model, 16), 8)), JlamaKv.layout(model, 16), 8);
            MemorySegment memory = MemorySegment.ofBuffer(device.hostView(blocks.buffer()).orElseThrow());
            int[] scattered = {5, 2};

            KvBufferCache.KvBuffer full = cache.getKvBuffer(UUID.randomUUID());
            float[] fullLogits = lastLogits(model.batchForward(tokens, 0, full));
            JlamaKv.toCache(model, full, 0, PREFIX, blocks, memory, scattered);

            KvBufferCache.KvBuffer resumed = cache.getKvBuffer(UUID.randomUUID());
            JlamaKv.fromCache(model, blocks, memory, scattered, 0, PREFIX, resumed);
            for (int l = 0; l < model.getConfig().numberOfLayers; l++) {
                for (int p = 0; p < PREFIX; p++) {
                    assertEquals(-1, full.getKeyTensorForPosition(l, p).getMemorySegment()
                            .mismatch(resumed.getKeyTensorForPosition(l, p).getMemorySegment()), "K " + l + "/" + p);
                    assertEquals(-1, full.getValTensorForPosition(l, p).getMemorySegment()
                            .mismatch(resumed.getValTensorForPosition(l, p).getMemorySegment()), "V " + l + "/" + p);
                }
            }
            float[] resumedLogits = lastLogits(model.batchForward(Arrays.copyOfRange(tokens, PREFIX, PROMPT), PREFIX,
                    resumed));
            int vocab = model.getConfig().vocabularySize;
            float largest = 0;
            for (int i = 0; i < vocab; i++) {
                largest = Math.max(largest, Math.abs(fullLogits[i] - resumedLogits[i]));
            }
            // Without C2 (see the pom) Jlama computes alike in every run: the full prefill's logits, bit for bit.
            assertArrayEquals(fullLogits, resumedLogits, "largest logit difference " + largest);

            // Without the prefix the next token's logits differ: the comparison sees a missing import.
            KvBufferCache.KvBuffer empty = cache.getKvBuffer(UUID.randomUUID());
            float[] blind = lastLogits(model.batchForward(Arrays.copyOfRange(tokens, PREFIX, PROMPT), PREFIX, empty));
            assertNotEquals(Arrays.toString(Arrays.copyOf(fullLogits, vocab)), Arrays.toString(Arrays.copyOf(blind,
                    vocab)));
            device.free(blocks.buffer());
        } finally {
            cache.close();
        }
    }

    @Test
    void aCacheOfAnotherGeometryIsRefused() {
        try (HostDevice device = new HostDevice(dir.resolve("device2"))) {
            io.kvmarket.kv.KvLayout other = io.kvmarket.kv.KvLayout.of(2, 4, 16, io.kvmarket.kv.DType.FLOAT32, 16,
                    io.kvmarket.kv.LayoutOrder.LAYER_MAJOR);
            DeviceBuffer buffer = device.allocate(PagedKvCache.requiredBytes(other, 4));
            PagedKvCache blocks = new PagedKvCache(buffer, other, 4);
            MemorySegment memory = MemorySegment.ofBuffer(device.hostView(buffer).orElseThrow());
            KvBufferCache cache = new KvBufferCache(model);
            try {
                KvBufferCache.KvBuffer kv = cache.getKvBuffer(UUID.randomUUID());
                assertThrows(IllegalArgumentException.class,
                        () -> JlamaKv.toCache(model, kv, 0, 16, blocks, memory, new int[] {0}));
            } finally {
                cache.close();
                device.free(buffer);
            }
        }
    }
}
