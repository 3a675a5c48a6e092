package io.kvmarket.benchmarks;

import io.kvmarket.ExportResult;
import io.kvmarket.KvMarketplace;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.kv.PagedKvCache;
import io.kvmarket.registry.shm.NodeLocalRegistry;

import java.nio.file.Path;

/**
 * The exporting inference process of {@link HostImportBenchmark}, run as a child JVM: opens the host device and
 * the node-local registry in the directory it is given, fills a 256 MiB KV cache with the
 * {@link ImportScenario} pattern, exports the prompt, prints {@value ImportScenario#READY} and keeps its offers
 * alive until its standard input closes (the benchmark closes it, or dies).
 */
public final class ExporterProcess {

    private ExporterProcess() {
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: ExporterProcess <shared directory>");
            System.exit(2);
        }
        Path dir = Path.of(args[0]);
        try (HostDevice device = new HostDevice(dir);
             NodeLocalRegistry registry = NodeLocalRegistry.open(dir, ImportScenario.REGISTRY_CAPACITY)) {
            PagedKvCache cache = ImportScenario.allocateCache(device);
            int[] blocks = ImportScenario.identityBlocks();
            ImportScenario.fill(cache, blocks);
            try (KvMarketplace market = ImportScenario.marketplace(device, registry, cache,
                    ImportScenario.EXPORTER_POOL_BYTES)) {
                ExportResult result = market.export(ImportScenario.prompt(), ImportScenario.TOKENS, blocks);
                int chunks = ImportScenario.TOKENS / Workloads.CHUNK_TOKENS;
                if (result.chunksPublished() != chunks) {
                    System.out.println("FAILED export published " + result.chunksPublished() + " of " + chunks
                            + " chunks: " + result);
                    System.exit(1);
                }
                System.out.println(ImportScenario.READY);
                System.out.flush();
                while (System.in.read() >= 0) {
                    // hold the offers until the benchmark lets go
                }
            }
        }
    }
}
