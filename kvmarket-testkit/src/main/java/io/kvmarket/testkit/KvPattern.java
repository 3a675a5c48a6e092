package io.kvmarket.testkit;

import java.util.Random;

/**
 * Deterministic test data that any process computes alike: token ids of a prompt, KV bytes of a request's
 * logical block, and block ids scattered the way a free list hands them out. Byte {@code b} of region {@code r}
 * of logical block {@code i} under {@code salt} is {@code salt * 131 + i * 31 + r * 7 + b} (mod 256), so two
 * prompts with different salts, or a block delivered to the wrong place, never compare equal by chance.
 */
public final class KvPattern {

    private KvPattern() {
    }

    /** The KV bytes of one region of logical block {@code block} of a request exported under {@code salt}. */
    public static byte[] region(int salt, int block, int region, int regionBytes) {
        byte[] p = new byte[regionBytes];
        for (int b = 0; b < regionBytes; b++) {
            p[b] = (byte) (salt * 131 + block * 31 + region * 7 + b);
        }
        return p;
    }

    /** Prompt token ids {@code salt * 1000 + i}. */
    public static int[] tokens(int n, int salt) {
        int[] t = new int[n];
        for (int i = 0; i < n; i++) {
            t[i] = salt * 1000 + i;
        }
        return t;
    }

    /** {@code n} distinct block ids in {@code [0, numBlocks)}, shuffled by {@code seed}. */
    public static int[] scattered(int n, int numBlocks, int seed) {
        if (n > numBlocks) {
            throw new IllegalArgumentException(n + " blocks out of " + numBlocks);
        }
        int[] all = new int[numBlocks];
        for (int i = 0; i < numBlocks; i++) {
            all[i] = i;
        }
        Random rnd = new Random(seed);
        for (int i = numBlocks - 1; i > 0; i--) {
            int j = rnd.nextInt(i + 1);
            int tmp = all[i];
            all[i] = all[j];
            all[j] = tmp;
        }
        return java.util.Arrays.copyOf(all, n);
    }

    /** Block ids {@code from, from + 1, ..., from + n - 1}. */
    public static int[] range(int from, int n) {
        int[] b = new int[n];
        for (int i = 0; i < n; i++) {
            b[i] = from + i;
        }
        return b;
    }
}
