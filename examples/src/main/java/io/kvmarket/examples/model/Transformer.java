package io.kvmarket.examples.model;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Forward pass of the Llama-style example model over a paged KV cache.
 *
 * <p><b>Bitwise reproducibility is the contract</b>: the K, V and logits of the token at position p are the same
 * bits whether p is computed in one long prefill, in a prefill that starts after imported tokens, or alone as a
 * decode step. Every token row is computed independently with one fixed summation order (sums run over inputs
 * in ascending order, vectorized only across independent outputs), and attention reads every earlier position's
 * K and V back from the cache, imported or computed. Threads split work by token rows, never inside a sum.
 * Java's float arithmetic is strict, and the exponential is a polynomial in plain float operations rather than
 * {@code Math.exp}, whose result may differ between interpreter and compiled code. So imported KV equals
 * recomputed KV bit for bit, and a request's output does not depend on whether the marketplace helped.
 *
 * <p>One forward pass at a time; not thread-safe.
 */
public final class Transformer implements AutoCloseable {

    /** Token rows per task: a tile's weights row is reused across its rows while it is in L1. */
    private static final int TILE = 8;

    private final ModelConfig c;
    private final ModelWeights w;
    private final PagedKvStore kv;
    private final int threads;
    private final ExecutorService workers;
    /** [position][headDim / 2] */
    private final float[] ropeCos;
    private final float[] ropeSin;

    public Transformer(ModelWeights weights, PagedKvStore kv, int threads) {
        if (threads <= 0) {
            throw new IllegalArgumentException("threads must be positive, was " + threads);
        }
        this.c = weights.config;
        this.w = weights;
        this.kv = kv;
        if (!kv.cache().layout().equals(c.kvLayout())) {
            throw new IllegalArgumentException("KV cache layout " + kv.cache().layout() + " is not the model's "
                    + c.kvLayout());
        }
        this.threads = threads;
        AtomicInteger n = new AtomicInteger();
        this.workers = Executors.newFixedThreadPool(threads, r -> {
            Thread t = new Thread(r, "transformer-" + n.incrementAndGet());
            t.setDaemon(true);
            return t;
        });
        int half = c.headDim() / 2;
        ropeCos = new float[c.maxPositions() * half];
        ropeSin = new float[c.maxPositions() * half];
        for (int p = 0; p < c.maxPositions(); p++) {
            for (int i = 0; i < half; i++) {
                double angle = p * StrictMath.pow(ModelConfig.ROPE_THETA, -2.0 * i / c.headDim());
                ropeCos[p * half + i] = (float) StrictMath.cos(angle);
                ropeSin[p * half + i] = (float) StrictMath.sin(angle);
            }
        }
    }

    public ModelConfig config() {
        return c;
    }

    /**
     * Computes and stores the K and V of positions {@code [from, to)} of {@code tokens}, reading the cached K and V
     * of positions before {@code from}, and returns the logits that follow position {@code to - 1}.
     *
     * @param blockTable the sequence's blocks: block i holds positions {@code [16 i, 16 i + 16)}; must cover {@code to}
     */
    public float[] prefill(int[] blockTable, int[] tokens, int from, int to) {
        if (from < 0 || to <= from || to > tokens.length || to > c.maxPositions()) {
            throw new IllegalArgumentException("positions [" + from + ", " + to + ") outside a sequence of "
                    + tokens.length + " tokens (max " + c.maxPositions() + ")");
        }
        if ((long) blockTable.length * ModelConfig.TOKENS_PER_BLOCK < to) {
            throw new IllegalArgumentException("block table of " + blockTable.length + " blocks cannot hold " + to
                    + " positions");
        }
        int n = to - from;
        int dim = c.dim();
        int qkvDim = c.qDim() + 2 * c.kvDim();
        int hidden = c.hidden();
        float[][] x = new float[n][];
        for (int r = 0; r < n; r++) {
            int token = tokens[from + r];
            if (token < 0 || token >= c.vocab()) {
                throw new IllegalArgumentException("token " + token + " at " + (from + r) + " outside the vocabulary");
            }
            x[r] = w.embedding[token].clone();
        }
        float[][] normed = new float[n][dim];
        float[][] qkv = new float[n][qkvDim];
        float[][] attended = new float[n][c.qDim()];
        float[][] gateUp = new float[n][2 * hidden];
        float[][] activated = new float[n][hidden];
        float[][] delta = new float[n][dim];
        float[][] keysT = new float[c.kvDim()][to];
        float[][] values = new float[c.kvHeads() * to][c.headDim()];
        for (int layer = 0; layer < c.layers(); layer++) {
            int l = layer;
            forEachTile(n, (a, b) -> {
                for (int r = a; r < b; r++) {
                    rmsNorm(x[r], w.attnNorm[l], normed[r]);
                }
                matmul(normed, a, b, w.qkv[l], qkv);
                for (int r = a; r < b; r++) {
                    int pos = from + r;
                    for (int h = 0; h < c.heads(); h++) {
                        rope(qkv[r], h * c.headDim(), pos);
                    }
                    for (int g = 0; g < c.kvHeads(); g++) {
                        rope(qkv[r], c.qDim() + g * c.headDim(), pos);
                    }
                    kv.write(blockTable, l, pos, qkv[r], c.qDim(), c.qDim() + c.kvDim());
                }
            });
            kv.gather(blockTable, l, to, keysT, values);
            forEachTile(n, (a, b) -> {
                float[] scores = new float[to];
                float[] head = new float[c.headDim()];
                for (int r = a; r < b; r++) {
                    attend(qkv[r], from + r, keysT, values, to, scores, head, attended[r]);
                }
                matmul(attended, a, b, w.attnOut[l], delta);
                for (int r = a; r < b; r++) {
                    add(x[r], delta[r]);
                    rmsNorm(x[r], w.mlpNorm[l], normed[r]);
                }
                matmul(normed, a, b, w.gateUp[l], gateUp);
                for (int r = a; r < b; r++) {
                    for (int j = 0; j < hidden; j++) {
                        float gate = gateUp[r][j];
                        activated[r][j] = gate / (1f + exp(-gate)) * gateUp[r][hidden + j];
                    }
                }
                matmul(activated, a, b, w.down[l], delta);
                for (int r = a; r < b; r++) {
                    add(x[r], delta[r]);
                }
            });
        }
        float[][] last = new float[1][dim];
        rmsNorm(x[n - 1], w.finalNorm, last[0]);
        float[][] logits = new float[1][c.vocab()];
        matmul(last, 0, 1, w.lmHead, logits);
        return logits[0];
    }

    /**
     * Greedy choice among the plain-text tokens (printable ASCII and newline), lowest id on ties. Restricting the
     * choice keeps generated text a valid UTF-8 string that re-encodes to the same tokens, so a chat that sends
     * the answer back as text extends exactly the sequence whose KV was computed.
     */
    public static int greedy(float[] logits) {
        int best = -1;
        for (int t = 0; t < logits.length; t++) {
            if (ByteTokenizer.isPlainText(t) && (best < 0 || logits[t] > logits[best])) {
                best = t;
            }
        }
        return best;
    }

    /**
     * Attention of one query token, all heads, over positions {@code [0, pos]}; {@code keysT} and {@code values}
     * hold {@code count} positions as {@link PagedKvStore#gather} lays them out. Sums over head dimensions and
     * over positions run in ascending order; taking four terms per pass (left to right) only saves loads and
     * stores of the partial sums.
     */
    private void attend(float[] qkv, int pos, float[][] keysT, float[][] values, int count, float[] scores,
                        float[] head, float[] out) {
        int len = pos + 1;
        int headDim = c.headDim();
        int group = c.heads() / c.kvHeads();
        float scale = (float) (1.0 / Math.sqrt(headDim));
        for (int h = 0; h < c.heads(); h++) {
            int q = h * headDim;
            int kvBase = h / group * headDim;
            Arrays.fill(scores, 0, len, 0f);
            int d = 0;
            for (; d + 4 <= headDim; d += 4) {
                float q0 = qkv[q + d] * scale;
                float q1 = qkv[q + d + 1] * scale;
                float q2 = qkv[q + d + 2] * scale;
                float q3 = qkv[q + d + 3] * scale;
                float[] k0 = keysT[kvBase + d];
                float[] k1 = keysT[kvBase + d + 1];
                float[] k2 = keysT[kvBase + d + 2];
                float[] k3 = keysT[kvBase + d + 3];
                for (int j = 0; j < len; j++) {
                    scores[j] = scores[j] + q0 * k0[j] + q1 * k1[j] + q2 * k2[j] + q3 * k3[j];
                }
            }
            for (; d < headDim; d++) {
                float qd = qkv[q + d] * scale;
                float[] k = keysT[kvBase + d];
                for (int j = 0; j < len; j++) {
                    scores[j] += qd * k[j];
                }
            }
            float max = Float.NEGATIVE_INFINITY;
            for (int j = 0; j < len; j++) {
                max = Math.max(max, scores[j]);
            }
            for (int j = 0; j < len; j++) {
                scores[j] = exp(scores[j] - max);
            }
            float sum = 0f;
            for (int j = 0; j < len; j++) {
                sum += scores[j];
            }
            Arrays.fill(head, 0f);
            int v = h / group * count;
            int j = 0;
            for (; j + 4 <= len; j += 4) {
                float p0 = scores[j];
                float p1 = scores[j + 1];
                float p2 = scores[j + 2];
                float p3 = scores[j + 3];
                float[] v0 = values[v + j];
                float[] v1 = values[v + j + 1];
                float[] v2 = values[v + j + 2];
                float[] v3 = values[v + j + 3];
                for (int i = 0; i < headDim; i++) {
                    head[i] = head[i] + p0 * v0[i] + p1 * v1[i] + p2 * v2[i] + p3 * v3[i];
                }
            }
            for (; j < len; j++) {
                float p = scores[j];
                float[] vj = values[v + j];
                for (int i = 0; i < headDim; i++) {
                    head[i] += p * vj[i];
                }
            }
            float inv = 1f / sum;
            for (int i = 0; i < headDim; i++) {
                out[q + i] = head[i] * inv;
            }
        }
    }

    /** Rotates the head at {@code v[off..off+headDim)} by the angles of position {@code pos}, pairwise. */
    private void rope(float[] v, int off, int pos) {
        int half = c.headDim() / 2;
        int t = pos * half;
        for (int i = 0; i < half; i++) {
            float cos = ropeCos[t + i];
            float sin = ropeSin[t + i];
            float a = v[off + 2 * i];
            float b = v[off + 2 * i + 1];
            v[off + 2 * i] = a * cos - b * sin;
            v[off + 2 * i + 1] = a * sin + b * cos;
        }
    }

    /**
     * {@code y[r] = x[r] W} for rows {@code [rowFrom, rowTo)}, with {@code W} input-major. Each output sums its
     * products in ascending input order; the inner loop runs across outputs, so vectorizing it reorders nothing.
     */
    static void matmul(float[][] x, int rowFrom, int rowTo, float[][] w, float[][] y) {
        for (int r = rowFrom; r < rowTo; r++) {
            Arrays.fill(y[r], 0f);
        }
        for (int i = 0; i < w.length; i++) {
            float[] wi = w[i];
            for (int r = rowFrom; r < rowTo; r++) {
                float xi = x[r][i];
                float[] yr = y[r];
                for (int j = 0; j < wi.length; j++) {
                    yr[j] += xi * wi[j];
                }
            }
        }
    }

    static void rmsNorm(float[] x, float[] weight, float[] out) {
        float squares = 0f;
        for (float v : x) {
            squares += v * v;
        }
        float inv = (float) (1.0 / Math.sqrt(squares / x.length + ModelConfig.NORM_EPS));
        for (int i = 0; i < x.length; i++) {
            out[i] = x[i] * inv * weight[i];
        }
    }

    private static void add(float[] x, float[] delta) {
        for (int i = 0; i < x.length; i++) {
            x[i] += delta[i];
        }
    }

    /**
     * e^x from plain float operations, so every JIT tier and every JVM gives the same bits, and branch-free, so
     * loops over it vectorize: a degree-6 polynomial of x/256, squared eight times. Relative error below 1e-4,
     * ample for softmax and SiLU. Inputs are clamped to [-87, 88], the range of normal float results.
     */
    static float exp(float x) {
        float t = Math.min(Math.max(x, -87f), 88f) * (1f / 256);
        float p = 1f + t * (1f + t * (0.5f + t * (1f / 6 + t * (1f / 24 + t * (1f / 120 + t * (1f / 720))))));
        p *= p;
        p *= p;
        p *= p;
        p *= p;
        p *= p;
        p *= p;
        p *= p;
        p *= p;
        return p;
    }

    private void forEachTile(int rows, TileBody body) {
        int tiles = (rows + TILE - 1) / TILE;
        if (tiles == 1 || threads == 1) {
            body.run(0, rows);
            return;
        }
        List<Callable<Void>> tasks = new ArrayList<>(tiles);
        for (int t = 0; t < tiles; t++) {
            int a = t * TILE;
            int b = Math.min(rows, a + TILE);
            tasks.add(() -> {
                body.run(a, b);
                return null;
            });
        }
        try {
            for (Future<Void> f : workers.invokeAll(tasks)) {
                f.get();
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted during a forward pass", e);
        } catch (ExecutionException e) {
            if (e.getCause() instanceof RuntimeException re) {
                throw re;
            }
            throw new IllegalStateException(e.getCause());
        }
    }

    @Override
    public void close() {
        workers.shutdownNow();
    }

    @FunctionalInterface
    private interface TileBody {
        void run(int rowFrom, int rowTo);
    }
}
