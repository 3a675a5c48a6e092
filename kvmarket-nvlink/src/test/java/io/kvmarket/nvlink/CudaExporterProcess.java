package io.kvmarket.nvlink;

import io.kvmarket.registry.shm.NodeLocalRegistry;
import io.kvmarket.testkit.KvFixture;

import java.nio.file.Path;

/** {@code DIR SALT}: exports a 128-token prompt from a CUDA KV cache, prints READY, waits for stdin to close. */
public final class CudaExporterProcess {

    public static void main(String[] args) throws Exception {
        try (NodeLocalRegistry registry = NodeLocalRegistry.open(Path.of(args[0]), 1024);
             KvFixture kv = GpuKv.engine(registry, 8)) {
            int salt = Integer.parseInt(args[1]);
            int[] blocks = KvFixture.scattered(8, salt);
            kv.fill(blocks, 8, salt);
            System.out.println("READY " + kv.market.export(KvFixture.tokens(128, salt), 128, blocks).chunksPublished());
            System.out.flush();
            while (System.in.read() >= 0) {
                // until the parent closes stdin or kills us
            }
        }
    }
}
