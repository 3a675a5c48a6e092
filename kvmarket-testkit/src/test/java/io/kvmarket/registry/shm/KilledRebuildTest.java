package io.kvmarket.registry.shm;

import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.NodeId;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.PublishOutcome;
import io.kvmarket.testkit.ChildJvm;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.ByteOrder;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;

import static io.kvmarket.registry.shm.RegistryFileDescriptor.HEADER_BYTES;
import static io.kvmarket.registry.shm.RegistryFileDescriptor.KEY_HI;
import static io.kvmarket.registry.shm.RegistryFileDescriptor.REBUILDING_OFFSET;
import static io.kvmarket.registry.shm.RegistryFileDescriptor.SLOT_BYTES;
import static io.kvmarket.registry.shm.RegistryFileDescriptor.STATE;
import static io.kvmarket.registry.shm.RegistryFileDescriptor.STATE_EMPTY;
import static io.kvmarket.registry.shm.RegistryFileDescriptor.STATE_LIVE;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A writer SIGKILLed while it rewrites the whole table (compaction) leaves slots it emptied in front of entries it
 * had not reached yet, so probes stop short of them. Before format 5 such an entry of a live owner stayed hidden:
 * its owner published it again beside itself, and withdrawing one copy left the other served over memory the
 * owner then reused, which an importer read as a full hit. The next writer must rewrite the table first.
 */
@Timeout(180)
class KilledRebuildTest {

    private static final int CAPACITY = 1 << 17;
    /** Consecutive homes from here: a run the rewrite takes a while to empty. */
    private static final long CLUSTER_HOME = 16;
    private static final int CLUSTER = 60_000;
    /** Published and withdrawn past the run until tombstones pass an eighth of the table: the rewrite starts. */
    private static final long TOMB_HOME = CLUSTER_HOME + CLUSTER + 1_000;
    private static final int TOMBS = CAPACITY / 8 + 1;

    @TempDir
    Path dir;

    @Test
    void anOfferBehindTheSlotsAKilledRewriteEmptiedIsFoundAgainNotPublishedTwice() throws Exception {
        try (NodeLocalRegistry registry = NodeLocalRegistry.open(dir, CAPACITY)) {
            ChildJvm writer = ChildJvm.start(Rewriter.class, dir.toString(), Integer.toString(CAPACITY));
            Offer mine;
            try {
                writer.awaitLine("RUN", Duration.ofSeconds(120));
                // Home at the start of the other process's run: it lands past the run's end.
                mine = offer(CLUSTER_HOME, 7, ProcessIdentity.current());
                assertEquals(PublishOutcome.PUBLISHED, registry.publish(mine));
                assertEquals(mine, registry.lookup(mine.key()));
                writer.send("go");
                killInsideTheRewrite(writer, mine, CLUSTER_HOME + CLUSTER);
            } finally {
                writer.close();
            }
            // The next writer rewrites first: the offer is found, so publishing it again is refused.
            assertEquals(PublishOutcome.ALREADY_OFFERED, registry.publish(mine));
            assertEquals(mine, registry.lookup(mine.key()));
            registry.withdraw(mine);
            assertNull(registry.lookup(mine.key()), "withdrawn");
            churn(registry, TOMB_HOME, TOMBS, ProcessIdentity.current()); // a rewrite would bring back a copy
            assertNull(registry.lookup(mine.key()), "no second copy of a withdrawn offer comes back");
        }
    }

    /**
     * Waits until the other process's rewrite has emptied the first slot of its run, kills it, and checks that the
     * kill came before the rewrite reached this process's offer past the run.
     */
    private void killInsideTheRewrite(ChildJvm writer, Offer mine, long mineAt) throws Exception {
        try (FileChannel ch = FileChannel.open(dir.resolve(NodeLocalRegistry.FILE_NAME), StandardOpenOption.READ)) {
            MappedByteBuffer file = ch.map(FileChannel.MapMode.READ_ONLY, 0, ch.size());
            file.order(ByteOrder.LITTLE_ENDIAN);
            assertEquals(mine.key().hi(), file.getLong(HEADER_BYTES + (int) mineAt * SLOT_BYTES + KEY_HI),
                    "this process's offer lies past the other process's run");
            long deadline = System.nanoTime() + Duration.ofSeconds(120).toNanos();
            while (file.getLong(REBUILDING_OFFSET) == 0 || state(file, CLUSTER_HOME) != STATE_EMPTY) {
                assertTrue(System.nanoTime() < deadline, "the other process never started rewriting the table");
                Thread.onSpinWait();
            }
            writer.kill();
            assertEquals(STATE_LIVE, state(file, mineAt),
                    "the rewrite reached this process's offer before the kill: this run proves nothing");
        }
    }

    private static long state(MappedByteBuffer file, long slot) {
        return file.getLong(HEADER_BYTES + (int) slot * SLOT_BYTES + STATE);
    }

    static Offer offer(long home, long generation, ProcessIdentity owner) {
        return Offer.of(new ChunkKey(0x5eedL + generation, home), NodeId.local(), owner,
                new Endpoint(Endpoint.DEVICE_IPC, new byte[] {1}), 0, 64, 1, generation, Long.MAX_VALUE);
    }

    static void churn(NodeLocalRegistry registry, long home, int n, ProcessIdentity owner) {
        for (int i = 0; i < n; i++) {
            Offer o = Offer.of(new ChunkKey(0x70_0000L, home + i), NodeId.local(), owner,
                    new Endpoint(Endpoint.DEVICE_IPC, new byte[] {2}), 0, 64, 1, 1_000_000 + i, Long.MAX_VALUE);
            registry.publish(o);
            registry.withdraw(o);
        }
    }

    /** Args: dir capacity. Publishes the run, says RUN, and on a line from stdin churns until the table is rewritten. */
    public static final class Rewriter {
        public static void main(String[] args) throws Exception {
            try (NodeLocalRegistry registry = NodeLocalRegistry.open(Path.of(args[0]), Integer.parseInt(args[1]))) {
                ProcessIdentity me = ProcessIdentity.current();
                for (int i = 0; i < CLUSTER; i++) {
                    if (registry.publish(offer(CLUSTER_HOME + i, 10 + i, me)) != PublishOutcome.PUBLISHED) {
                        throw new IllegalStateException("run offer " + i + " not published");
                    }
                }
                System.out.println("RUN");
                System.out.flush();
                new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8)).readLine();
                churn(registry, TOMB_HOME, TOMBS, me);
                System.out.println("DONE");
                System.out.flush();
                Thread.sleep(Long.MAX_VALUE);
            }
        }
    }
}
