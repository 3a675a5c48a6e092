package io.kvmarket.nvlink;

import io.kvmarket.registry.shm.NodeLocalRegistry;
import io.kvmarket.testkit.KvFixture;

import java.nio.file.Path;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * {@code DIR PROMPTS}: exports 64-token prompts 0..PROMPTS-1 round and round from a CUDA KV cache, each refilled with
 * its own bytes first, through a pool of 3 chunks, so chunks are evicted and their memory reused while another process
 * imports them. Prints READY after the first round; when stdin closes, prints {@code EVICTIONS n} and exits.
 */
public final class CudaChurningExporterProcess {

    public static void main(String[] args) throws Exception {
        int prompts = Integer.parseInt(args[1]);
        try (NodeLocalRegistry registry = NodeLocalRegistry.open(Path.of(args[0]), 1024);
             KvFixture kv = GpuKv.engine(registry, 3)) {
            AtomicBoolean stop = new AtomicBoolean();
            Thread stdin = new Thread(() -> {
                try {
                    while (System.in.read() >= 0) {
                        // until the parent closes stdin
                    }
                } catch (java.io.IOException e) {
                    // the parent is gone: stop as well
                }
                stop.set(true);
            });
            stdin.setDaemon(true);
            stdin.start();
            int[] blocks = KvFixture.scattered(4, 1);
            for (int round = 0; !stop.get(); round++) {
                int s = round % prompts;
                kv.fill(blocks, 4, s);
                kv.market.export(KvFixture.tokens(64, s), 64, blocks);
                if (round == prompts - 1) {
                    System.out.println("READY");
                    System.out.flush();
                }
            }
            System.out.println("EVICTIONS " + kv.market.pool().evictions());
            System.out.flush();
        }
    }
}
