package io.kvmarket;

import io.kvmarket.testkit.RegistryContractTest;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.NodeId;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.shm.NodeLocalRegistry;
import io.kvmarket.testkit.KvFixture;

import java.nio.file.Path;

/**
 * A second process for cross-process tests. {@code export DIR SALT}: exports a 128-token prompt and waits for
 * stdin to close. {@code churn DIR}: publishes and withdraws offers in a loop, holding the registry lock often,
 * until killed.
 */
public final class ExporterProcess {

    public static void main(String[] args) throws Exception {
        Path dir = Path.of(args[1]);
        try (NodeLocalRegistry registry = NodeLocalRegistry.open(dir, 1024)) {
            if (args[0].equals("export")) {
                int salt = Integer.parseInt(args[2]);
                try (KvFixture fixture = new KvFixture(dir, registry, 8)) {
                    int[] blocks = KvFixture.scattered(8, salt);
                    fixture.fill(blocks, 8, salt);
                    ExportResult r = fixture.market.export(KvFixture.tokens(128, salt), 128, blocks);
                    System.out.println("READY " + r.chunksPublished());
                    System.out.flush();
                    while (System.in.read() >= 0) {
                        // wait for the parent to close stdin, or to kill us
                    }
                }
            } else {
                System.out.println("READY");
                System.out.flush();
                for (long g = 1; ; g++) {
                    ChunkKey key = new ChunkKey(g, g * 0x9e3779b97f4a7c15L);
                    Offer o = Offer.of(key, NodeId.local(), ProcessIdentity.current(), RegistryContractTest.ipc(1), 0,
                            64, 1, g, System.currentTimeMillis() + 60_000);
                    registry.publish(o);
                    if (g % 3 != 0) {
                        registry.withdraw(o);
                    }
                }
            }
        }
    }
}
