package io.kvmarket.examples.model;

import io.kvmarket.device.host.HostBuffer;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.kv.PagedKvCache;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.Arrays;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class TransformerTest {

    private static final ModelConfig MODEL = ModelConfig.tiny();

    @TempDir
    Path dir;
    HostDevice device;
    PagedKvCache cache;
    Transformer model;
    BlockAllocator blocks;

    @BeforeEach
    void open() {
        device = new HostDevice(dir);
        cache = new PagedKvCache(device.allocate(PagedKvCache.requiredBytes(MODEL.kvLayout(), MODEL.maxBlocks())),
                MODEL.kvLayout(), MODEL.maxBlocks());
        model = new Transformer(ModelWeights.random(MODEL, 3), new PagedKvStore(cache), 2);
        blocks = new BlockAllocator(MODEL.maxBlocks());
    }

    @AfterEach
    void close() {
        model.close();
        device.close();
    }

    private static int[] text(int n) {
        int[] tokens = new int[n];
        for (int i = 0; i < n; i++) {
            tokens[i] = 'a' + (i * 7) % 26;
        }
        return tokens;
    }

    private byte[] kvBytes(int[] table, int positions) {
        ByteBuffer memory = ((HostBuffer) cache.buffer()).memory();
        int tokenBytes = MODEL.kvDim() * Float.BYTES;
        byte[] all = new byte[positions * MODEL.kvLayout().regionsPerBlock() * tokenBytes];
        int at = 0;
        for (int r = 0; r < MODEL.kvLayout().regionsPerBlock(); r++) {
            for (int p = 0; p < positions; p++) {
                long offset = cache.regionOffset(table[p / ModelConfig.TOKENS_PER_BLOCK], r)
                        + (long) (p % ModelConfig.TOKENS_PER_BLOCK) * tokenBytes;
                memory.get((int) offset, all, at, tokenBytes);
                at += tokenBytes;
            }
        }
        return all;
    }

    @Test
    void kvAndLogitsAreBitIdenticalHoweverThePrefillIsSplit() {
        int[] tokens = text(100);
        int[] whole = blocks.allocate(7);
        int[] split = blocks.allocate(7);
        float[] oneGo = model.prefill(whole, tokens, 0, 100);
        model.prefill(split, tokens, 0, 37);
        model.prefill(split, tokens, 37, 80);
        float[] last = null;
        for (int p = 80; p < 100; p++) {
            last = model.prefill(split, tokens, p, p + 1);
        }
        assertArrayEquals(kvBytes(whole, 100), kvBytes(split, 100));
        assertArrayEquals(oneGo, last);
    }

    @Test
    void laterTokensDoNotChangeEarlierKv() {
        int[] a = text(64);
        int[] b = text(64);
        b[40] = '!';
        int[] tableA = blocks.allocate(4);
        int[] tableB = blocks.allocate(4);
        model.prefill(tableA, a, 0, 64);
        model.prefill(tableB, b, 0, 64);
        byte[] kvA = kvBytes(tableA, 64);
        byte[] kvB = kvBytes(tableB, 64);
        assertArrayEquals(kvBytes(tableA, 40), kvBytes(tableB, 40));
        assertFalse(Arrays.equals(kvA, kvB), "token 40 changes the KV from position 40 on");
    }

    @Test
    void prefillRejectsATableTooShortForItsPositions() {
        int[] table = blocks.allocate(2);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> model.prefill(table, text(40), 0, 40));
        assertEquals("block table of 2 blocks cannot hold 40 positions", e.getMessage());
    }

    @Test
    void greedyPicksTheHighestPlainTextTokenLowestIdOnTies() {
        float[] logits = new float[ByteTokenizer.VOCAB];
        logits[200] = 9f;
        logits[7] = 8f;
        logits['q'] = 5f;
        logits['z'] = 5f;
        assertEquals('q', Transformer.greedy(logits));
    }

    @Test
    void expIsCloseToMathExpOverTheSoftmaxRange() {
        for (float x = -80f; x <= 20f; x += 0.37f) {
            double expected = Math.exp(x);
            assertEquals(expected, Transformer.exp(x), expected * 1e-4, "exp(" + x + ")");
        }
        assertEquals(1f, Transformer.exp(0f));
        assertTrue(Transformer.exp(-1000f) < 1e-37f);
    }
}
