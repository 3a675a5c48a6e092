package io.kvmarket.examples.model;

import java.util.Arrays;
import java.util.SplittableRandom;

/**
 * Weights of the example model, drawn from a seed: the same seed gives the same bits in every JVM. Matrices are
 * stored input-major, one array per input ({@code w[i][j]} maps input i to output j), so a matrix-vector product
 * adds whole rows and the compiler can vectorize across outputs without reordering any sum. (HotSpot 17
 * vectorizes such a loop only when both arrays are indexed from 0, hence rows rather than one flat array.)
 *
 * <p>Scaling keeps activations near unit size: uniform weights with variance 1/fan-in, and the two projections
 * that write into the residual stream (attention output, MLP down) further divided by sqrt(2 * layers).
 */
public final class ModelWeights {

    final ModelConfig config;
    final long seed;
    /** [vocab][dim] */
    final float[][] embedding;
    /** Per layer: [dim] */
    final float[][] attnNorm;
    /** Per layer: [dim][qDim + 2 * kvDim], outputs q | k | v. */
    final float[][][] qkv;
    /** Per layer: [qDim][dim] */
    final float[][][] attnOut;
    /** Per layer: [dim] */
    final float[][] mlpNorm;
    /** Per layer: [dim][2 * hidden], outputs gate | up. */
    final float[][][] gateUp;
    /** Per layer: [hidden][dim] */
    final float[][][] down;
    /** [dim] */
    final float[] finalNorm;
    /** [dim][vocab] */
    final float[][] lmHead;

    private ModelWeights(ModelConfig c, long seed) {
        this.config = c;
        this.seed = seed;
        SplittableRandom rnd = new SplittableRandom(seed);
        float residualScale = (float) (1.0 / Math.sqrt(2.0 * c.layers()));
        embedding = uniform(rnd, c.vocab(), c.dim(), 1f);
        attnNorm = new float[c.layers()][];
        qkv = new float[c.layers()][][];
        attnOut = new float[c.layers()][][];
        mlpNorm = new float[c.layers()][];
        gateUp = new float[c.layers()][][];
        down = new float[c.layers()][][];
        for (int l = 0; l < c.layers(); l++) {
            attnNorm[l] = ones(c.dim());
            qkv[l] = uniform(rnd, c.dim(), c.qDim() + 2 * c.kvDim(), fanIn(c.dim()));
            attnOut[l] = uniform(rnd, c.qDim(), c.dim(), fanIn(c.qDim()) * residualScale);
            mlpNorm[l] = ones(c.dim());
            gateUp[l] = uniform(rnd, c.dim(), 2 * c.hidden(), fanIn(c.dim()));
            down[l] = uniform(rnd, c.hidden(), c.dim(), fanIn(c.hidden()) * residualScale);
        }
        finalNorm = ones(c.dim());
        lmHead = uniform(rnd, c.dim(), c.vocab(), fanIn(c.dim()));
    }

    public static ModelWeights random(ModelConfig config, long seed) {
        return new ModelWeights(config, seed);
    }

    public ModelConfig config() {
        return config;
    }

    public long seed() {
        return seed;
    }

    /** Parameter count. */
    public long parameters() {
        ModelConfig c = config;
        long perLayer = 2L * c.dim() + (long) c.dim() * (c.qDim() + 2 * c.kvDim()) + (long) c.qDim() * c.dim()
                + 3L * c.dim() * c.hidden();
        return 2L * c.vocab() * c.dim() + c.dim() + c.layers() * perLayer;
    }

    /** Half-width of a uniform distribution with variance 1/fanIn. */
    private static float fanIn(int fanIn) {
        return (float) Math.sqrt(3.0 / fanIn);
    }

    private static float[][] uniform(SplittableRandom rnd, int rows, int cols, float halfWidth) {
        float[][] w = new float[rows][cols];
        for (float[] row : w) {
            for (int j = 0; j < cols; j++) {
                row[j] = (float) ((rnd.nextDouble() * 2 - 1) * halfWidth);
            }
        }
        return w;
    }

    private static float[] ones(int n) {
        float[] w = new float[n];
        Arrays.fill(w, 1f);
        return w;
    }
}
