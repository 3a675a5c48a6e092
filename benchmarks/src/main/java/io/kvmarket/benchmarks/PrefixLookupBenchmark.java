package io.kvmarket.benchmarks;

import io.kvmarket.key.ChunkKey;
import io.kvmarket.key.PrefixHasher;
import io.kvmarket.node.NodeId;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.InProcessRegistry;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.registry.PublishOutcome;
import io.kvmarket.registry.shm.NodeLocalRegistry;
import io.kvmarket.testkit.ScratchDir;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * Longest-prefix lookup of an 8,192-token prompt whose 32 chunk keys are all offered, on the in-process registry
 * and on the node-local registry (its file in a fresh directory under /dev/shm), against 32 gets from a plain
 * {@link HashMap} holding the same offers, collected into a list as {@code lookupPrefix} returns them. Keys are
 * computed once in setup: this measures the lookup alone.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Fork(value = 1, jvmArgs = {"-Xms1g", "-Xmx1g", "-XX:+AlwaysPreTouch"})
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
public class PrefixLookupBenchmark {

    static final int CHUNKS = Workloads.PROMPT_TOKENS / Workloads.CHUNK_TOKENS;

    private ChunkKey[] keys;
    private InProcessRegistry inProcess;
    private NodeLocalRegistry nodeLocal;
    private Path nodeLocalDir;
    private Map<ChunkKey, Offer> hashMap;

    @Setup
    public void setUp() {
        PrefixHasher hasher = new PrefixHasher(Workloads.NAMESPACE, Workloads.CHUNK_TOKENS);
        keys = hasher.keys(Workloads.tokens(Workloads.PROMPT_TOKENS, 2), Workloads.PROMPT_TOKENS);
        long chunkBytes = (long) Workloads.CHUNK_TOKENS * Workloads.LAYOUT.bytesPerToken();
        long fingerprint = PrefixHasher.layoutFingerprint(Workloads.LAYOUT);
        long expiry = System.currentTimeMillis() + TimeUnit.HOURS.toMillis(1);
        byte[] handle = new byte[44];
        for (int i = 0; i < handle.length; i++) {
            handle[i] = (byte) (31 * i + 7);
        }
        Endpoint endpoint = new Endpoint(Endpoint.DEVICE_IPC, handle);
        inProcess = new InProcessRegistry();
        nodeLocalDir = ScratchDir.create("kvmarket-bench-lookup-");
        nodeLocal = NodeLocalRegistry.open(nodeLocalDir, NodeLocalRegistry.DEFAULT_CAPACITY);
        hashMap = new HashMap<>();
        for (int i = 0; i < keys.length; i++) {
            Offer offer = Offer.of(keys[i], NodeId.local(), ProcessIdentity.current(), endpoint, i * chunkBytes,
                    chunkBytes, fingerprint, i + 1, expiry);
            publish(inProcess, offer);
            publish(nodeLocal, offer);
            hashMap.put(keys[i], offer);
        }
        requireAll(inProcess());
        requireAll(nodeLocal());
        requireAll(baselineHashMap());
    }

    @TearDown
    public void tearDown() {
        inProcess.close();
        nodeLocal.close();
        ScratchDir.delete(nodeLocalDir);
    }

    @Benchmark
    public List<Offer> inProcess() {
        return inProcess.lookupPrefix(keys, CHUNKS);
    }

    @Benchmark
    public List<Offer> nodeLocal() {
        return nodeLocal.lookupPrefix(keys, CHUNKS);
    }

    @Benchmark
    public List<Offer> baselineHashMap() {
        List<Offer> found = new ArrayList<>(CHUNKS);
        for (int i = 0; i < CHUNKS; i++) {
            Offer o = hashMap.get(keys[i]);
            if (o == null) {
                break;
            }
            found.add(o);
        }
        return found;
    }

    private static void publish(OfferRegistry registry, Offer offer) {
        PublishOutcome outcome = registry.publish(offer);
        if (outcome != PublishOutcome.PUBLISHED) {
            throw new IllegalStateException("publishing " + offer + " into " + registry.getClass().getSimpleName()
                    + " gave " + outcome);
        }
    }

    private static void requireAll(List<Offer> found) {
        if (found.size() != CHUNKS) {
            throw new IllegalStateException("lookup found " + found.size() + " of " + CHUNKS + " offers");
        }
    }
}
