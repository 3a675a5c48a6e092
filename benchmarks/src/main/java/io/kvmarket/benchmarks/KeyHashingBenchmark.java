package io.kvmarket.benchmarks;

import io.kvmarket.key.ChunkKey;
import io.kvmarket.key.PrefixHasher;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OperationsPerInvocation;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.Warmup;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.security.DigestException;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.concurrent.TimeUnit;

/**
 * Cost of the SHA-256 key chain of an 8,192-token prompt (32 chunks of 256), in ns per token, against the
 * unavoidable part of it: one plain SHA-256 over the same 32 KiB of little-endian token bytes. The chain hashes
 * 16 more bytes per chunk and one more padding block per chunk, encodes the tokens, and makes the keys.
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
@OperationsPerInvocation(Workloads.PROMPT_TOKENS)
@Fork(value = 1, jvmArgs = {"-Xms1g", "-Xmx1g", "-XX:+AlwaysPreTouch"})
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
public class KeyHashingBenchmark {

    private PrefixHasher hasher;
    private int[] tokens;
    private byte[] tokenBytes;
    private MessageDigest sha256;
    private final byte[] digest = new byte[32];

    @Setup
    public void setUp() throws NoSuchAlgorithmException {
        hasher = new PrefixHasher(Workloads.NAMESPACE, Workloads.CHUNK_TOKENS);
        tokens = Workloads.tokens(Workloads.PROMPT_TOKENS, 1);
        ByteBuffer le = ByteBuffer.allocate(4 * tokens.length).order(ByteOrder.LITTLE_ENDIAN);
        for (int t : tokens) {
            le.putInt(t);
        }
        tokenBytes = le.array();
        sha256 = MessageDigest.getInstance("SHA-256");
        ChunkKey[] keys = hasher.keys(tokens, tokens.length);
        if (keys.length != Workloads.PROMPT_TOKENS / Workloads.CHUNK_TOKENS) {
            throw new IllegalStateException("expected 32 chunk keys, got " + keys.length);
        }
    }

    @Benchmark
    public ChunkKey[] sha256Chain() {
        return hasher.keys(tokens, Workloads.PROMPT_TOKENS);
    }

    @Benchmark
    public byte[] baselinePlainSha256() throws DigestException {
        sha256.update(tokenBytes);
        sha256.digest(digest, 0, digest.length);
        return digest;
    }
}
