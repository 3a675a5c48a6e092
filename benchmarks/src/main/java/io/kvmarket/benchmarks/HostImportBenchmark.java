package io.kvmarket.benchmarks;

import io.kvmarket.KvMarketplace;
import io.kvmarket.LoadResult;
import io.kvmarket.Match;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.kv.PagedKvCache;
import io.kvmarket.registry.shm.NodeLocalRegistry;
import io.kvmarket.testkit.ScratchDir;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

/**
 * Cross-process import of 256 MiB of paged KV through the host device, against a plain copy of the same bytes.
 *
 * <p>An {@link ExporterProcess} child JVM (same class path) exports the prompt into its pool on the node-local
 * registry in a shared directory under /dev/shm. Each invocation here is what an engine does before prefill:
 * {@code match} all 2,048 tokens, then {@code load} them into 128 destination blocks in shuffled order, as an
 * engine's free list hands them out, and wait for the copy. The baseline copies 256 MiB between two buffers in
 * one bulk put: direct buffers, and /dev/shm mappings like the host device's memory. After the measurement the
 * imported bytes are compared with the pattern once, and {@code bitexact=} is printed and, when the
 * {@link Workloads#REPORT_PROPERTY} property names a file, appended to it for {@link BenchmarkMain}.
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Fork(value = 1, jvmArgs = {"-Xms1g", "-Xmx1g", "-XX:+AlwaysPreTouch"})
@Warmup(iterations = 3, time = 2)
@Measurement(iterations = 6, time = 2)
public class HostImportBenchmark {

    static final String BITEXACT_KEY = "import.bitexact=";

    @Benchmark
    public int marketplaceImport(Importer s) {
        Match match = s.market.match(s.prompt, ImportScenario.TOKENS);
        LoadResult result = s.market.load(match, s.blockTable).join();
        if (result.tokensImported() != ImportScenario.TOKENS) {
            throw new IllegalStateException("imported " + result.tokensImported() + " of " + ImportScenario.TOKENS
                    + " tokens: " + result);
        }
        return result.tokensImported();
    }

    @Benchmark
    public ByteBuffer baselineBulkCopy(PlainCopy c) {
        return c.dst.put(0, c.src, 0, (int) ImportScenario.KV_BYTES);
    }

    /** The importing engine: its own host device, KV cache and marketplace on the exporter's registry. */
    @State(Scope.Benchmark)
    public static class Importer {
        Path dir;
        Process exporter;
        Thread killOnExit;
        HostDevice device;
        NodeLocalRegistry registry;
        PagedKvCache cache;
        KvMarketplace market;
        int[] prompt;
        int[] blockTable;

        @Setup(Level.Trial)
        public void setUp() throws Exception {
            dir = ScratchDir.create("kvmarket-bench-import-");
            try {
                exporter = startExporter(dir);
                Process child = exporter;
                killOnExit = new Thread(child::destroyForcibly, "kvmarket-bench-exporter-reaper");
                Runtime.getRuntime().addShutdownHook(killOnExit);
                awaitReady(exporter, dir.resolve("exporter.log"));
                device = new HostDevice(dir);
                registry = NodeLocalRegistry.open(dir, ImportScenario.REGISTRY_CAPACITY);
                cache = ImportScenario.allocateCache(device);
                // The importer exports nothing: its pool is the one chunk the builder requires.
                market = ImportScenario.marketplace(device, registry, cache, ImportScenario.CHUNK_BYTES);
                prompt = ImportScenario.prompt();
                List<Integer> free = new ArrayList<>();
                for (int b = 0; b < ImportScenario.BLOCKS; b++) {
                    free.add(b);
                }
                Collections.shuffle(free, new Random(42));
                blockTable = free.stream().mapToInt(Integer::intValue).toArray();
            } catch (Exception | Error e) {
                cleanUp();
                throw e;
            }
        }

        @TearDown(Level.Trial)
        public void tearDown() throws IOException {
            try {
                Workloads.report(BITEXACT_KEY + ImportScenario.holdsPattern(cache, blockTable));
            } finally {
                cleanUp();
            }
        }

        private void cleanUp() {
            try {
                if (market != null) {
                    market.close();
                }
                if (registry != null) {
                    registry.close();
                }
                if (device != null) {
                    device.close();
                }
            } finally {
                if (exporter != null) {
                    exporter.destroyForcibly();
                    try {
                        exporter.waitFor(10, TimeUnit.SECONDS);
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                    Runtime.getRuntime().removeShutdownHook(killOnExit);
                }
                ScratchDir.delete(dir);
            }
        }

        private static Process startExporter(Path dir) throws IOException {
            String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
            ProcessBuilder pb = new ProcessBuilder(java, "-Xmx256m",
                    "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                    "-cp", System.getProperty("java.class.path"),
                    ExporterProcess.class.getName(), dir.toString());
            pb.redirectError(dir.resolve("exporter.log").toFile());
            return pb.start();
        }

        private static void awaitReady(Process exporter, Path log) throws Exception {
            BufferedReader out = new BufferedReader(new InputStreamReader(exporter.getInputStream(),
                    StandardCharsets.UTF_8));
            String line = CompletableFuture.supplyAsync(() -> {
                try {
                    return out.readLine();
                } catch (IOException e) {
                    return "FAILED reading the exporter's output: " + e;
                }
            }).get(120, TimeUnit.SECONDS);
            if (!ImportScenario.READY.equals(line)) {
                String err = Files.exists(log) ? Files.readString(log) : "";
                throw new IllegalStateException("exporter did not get ready: " + line + System.lineSeparator() + err);
            }
        }
    }

    /** Two 256 MiB buffers of the chosen kind, touched in setup so the copy never faults. */
    @State(Scope.Benchmark)
    public static class PlainCopy {
        @Param({"direct", "shm"})
        public String memory;

        ByteBuffer src;
        ByteBuffer dst;
        private Path dir;

        @Setup(Level.Trial)
        public void setUp() throws IOException {
            int bytes = (int) ImportScenario.KV_BYTES;
            if (memory.equals("direct")) {
                src = ByteBuffer.allocateDirect(bytes);
                dst = ByteBuffer.allocateDirect(bytes);
            } else {
                dir = ScratchDir.create("kvmarket-bench-copy-");
                src = map(dir.resolve("src"), bytes);
                dst = map(dir.resolve("dst"), bytes);
            }
            src.order(ByteOrder.LITTLE_ENDIAN);
            for (int i = 0; i < bytes; i += Long.BYTES) {
                src.putLong(i, Workloads.mix(i));
                dst.putLong(i, 0);
            }
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            src = null;
            dst = null;
            ScratchDir.delete(dir);
        }

        private static ByteBuffer map(Path file, int bytes) throws IOException {
            try (RandomAccessFile raf = new RandomAccessFile(file.toFile(), "rw")) {
                raf.setLength(bytes);
                return raf.getChannel().map(FileChannel.MapMode.READ_WRITE, 0, bytes);
            }
        }
    }
}
