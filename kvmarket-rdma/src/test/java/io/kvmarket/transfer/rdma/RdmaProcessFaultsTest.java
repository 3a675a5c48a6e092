package io.kvmarket.transfer.rdma;

import io.kvmarket.testkit.ChildJvm;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Faults for real between processes over the fake provider, each side a JVM of its own ({@link RdmaNode}): either
 * side SIGKILLed mid-transfer, a queue pair driven to error by the "NIC", an import past its deadline. Each import
 * ends complete or as a miss with a reason whose delivered prefix is exact, and the exporter keeps no queue pair of
 * an importer that is gone.
 */
@Timeout(180)
class RdmaProcessFaultsTest {

    private static final Duration WAIT = Duration.ofSeconds(60);
    /** 8 MiB in 2,048 reads over 4 queue pairs: about a second with 2 ms per read. */
    private static final int CHUNKS = 128;

    private final List<ChildJvm> children = new ArrayList<>();

    @BeforeAll
    static void verbs() {
        FakeVerbs.require();
    }

    @AfterEach
    void killChildren() {
        children.forEach(ChildJvm::close);
    }

    private ChildJvm node(List<String> env, String... args) {
        List<String> prefix = new ArrayList<>(List.of("env"));
        prefix.addAll(env);
        ChildJvm c = ChildJvm.start(prefix, RdmaNode.class, List.of(), args);
        children.add(c);
        return c;
    }

    private ChildJvm exporter() {
        return node(List.of(), "serve", "42", String.valueOf(CHUNKS));
    }

    private ChildJvm importer(ChildJvm exporter, long deadlineMillis, String... env) {
        String endpoint = exporter.awaitLine("ENDPOINT", WAIT).substring("ENDPOINT ".length());
        ChildJvm i = node(List.of(env), "fetch", "42", String.valueOf(CHUNKS), endpoint, String.valueOf(deadlineMillis));
        i.awaitLine("READY", WAIT);
        return i;
    }

    private static String[] fetch(ChildJvm importer) {
        importer.send("fetch");
        return importer.awaitLine("FETCHED", WAIT).split(" ");
    }

    private static void assertExactPrefixMiss(String[] fetched, String failure) {
        assertTrue(Integer.parseInt(fetched[1]) < CHUNKS, "a cut import reported everything: " + String.join(" ", fetched));
        assertEquals(failure, fetched[2], String.join(" ", fetched));
        assertEquals("-1", fetched[3], "wrong bytes within the delivered prefix: " + String.join(" ", fetched));
    }

    @Test
    void anExporterKilledMidTransferIsASourceGoneMissWithAnExactPrefix() throws InterruptedException {
        ChildJvm exporter = exporter();
        ChildJvm importer = importer(exporter, 30_000, "KVM_FAKE_VERBS_DELAY_US=2000");
        assertEquals(List.of("FETCHED", String.valueOf(CHUNKS), "NONE", "-1"), List.of(fetch(importer)));
        importer.send("fetch");
        Thread.sleep(300);
        exporter.kill();
        assertExactPrefixMiss(importer.awaitLine("FETCHED", WAIT).split(" "), "SOURCE_GONE");
        importer.send("live");
        assertEquals("LIVE 1 1 0 0", importer.awaitLine("LIVE", WAIT),
                "the importer keeps its context and destination registration, and no queue pair to the dead exporter");
    }

    @Test
    void anImporterKilledMidTransferLeavesNoQueuePairAtTheExporter() throws InterruptedException {
        ChildJvm exporter = exporter();
        ChildJvm importer = importer(exporter, 30_000, "KVM_FAKE_VERBS_DELAY_US=2000");
        importer.send("fetch");
        assertEquals("LIVE 1 1 1 4", liveUntil(exporter, "LIVE 1 1 1 4"), "the exporter serves the importer's channel");
        importer.kill();
        assertEquals("LIVE 1 1 0 0", liveUntil(exporter, "LIVE 1 1 0 0"), "context and pool registration only: the "
                + "dead importer's queue pairs went with its control connection");
    }

    /** Asks {@code node} for its live verbs objects until it answers {@code wanted}, for up to a minute; the last answer. */
    private static String liveUntil(ChildJvm node, String wanted) throws InterruptedException {
        String last = "";
        long deadline = System.nanoTime() + WAIT.toNanos();
        while (!last.equals(wanted) && System.nanoTime() < deadline) {
            node.send("live");
            last = node.awaitLine("LIVE", WAIT);
            Thread.sleep(20);
        }
        return last;
    }

    private ChildJvm receiver(long timeoutMillis) {
        return node(List.of(), "receive", "42", String.valueOf(CHUNKS), String.valueOf(timeoutMillis));
    }

    private ChildJvm pusher(ChildJvm receiver, String... env) {
        String ticket = receiver.awaitLine("TICKET", WAIT).substring("TICKET ".length());
        return node(List.of(env), "push", "42", String.valueOf(CHUNKS), ticket);
    }

    @Test
    void aPushBetweenProcessesLandsExactly() throws InterruptedException {
        ChildJvm receiver = receiver(30_000);
        ChildJvm pusher = pusher(receiver);
        assertEquals("PUSHED NONE", pusher.awaitLine("PUSHED", WAIT));
        assertEquals("LANDED ok", receiver.awaitLine("LANDED", WAIT));
        assertEquals("RECEIVED -1", receiver.awaitLine("RECEIVED", WAIT), "every span holds the sender's bytes");
        assertEquals("LIVE 1 0 0 0", liveUntil(receiver, "LIVE 1 0 0 0"), "the spans deregistered, the queue pairs gone");
    }

    @Test
    void aPusherKilledMidPushFailsTheReceiversWaitAndLeavesNothingOpen() throws InterruptedException {
        ChildJvm receiver = receiver(5_000);
        ChildJvm pusher = pusher(receiver, "KVM_FAKE_VERBS_DELAY_US=2000");
        assertEquals("LIVE 2 1 1 4", liveUntil(receiver, "LIVE 2 1 1 4"), "the push under way: its own protection domain, its spans (back to back: one registration), 4 queue pairs");
        pusher.kill();
        assertTrue(receiver.awaitLine("LANDED", WAIT).startsWith("LANDED failed"), "no immediate came: a miss");
        assertEquals("LIVE 1 0 0 0", liveUntil(receiver, "LIVE 1 0 0 0"));
    }

    @Test
    void aReceiverKilledMidPushIsASourceGoneFailureAtTheSender() throws InterruptedException {
        ChildJvm receiver = receiver(30_000);
        ChildJvm pusher = pusher(receiver, "KVM_FAKE_VERBS_DELAY_US=2000");
        assertEquals("LIVE 2 1 1 4", liveUntil(receiver, "LIVE 2 1 1 4"));
        receiver.kill();
        assertTrue(pusher.awaitLine("PUSHED", WAIT).startsWith("PUSHED SOURCE_GONE"), "the receiver stopped answering");
        assertEquals("LIVE 1 1 0 0", liveUntil(pusher, "LIVE 1 1 0 0"), "its source registration only");
    }

    @Test
    void aQueuePairDrivenToErrorIsAFailedMissWithAnExactPrefixAndTheNextImportSetsUpAfresh() {
        ChildJvm exporter = exporter();
        ChildJvm importer = importer(exporter, 30_000, "KVM_FAKE_VERBS_QP_ERROR_AFTER_BYTES=1048576");
        for (int i = 0; i < 2; i++) {
            String[] fetched = fetch(importer);
            assertExactPrefixMiss(fetched, "FAILED");
        }
        importer.send("live");
        assertEquals("LIVE 1 1 0 0", importer.awaitLine("LIVE", WAIT), "failed channels are torn down");
        exporter.send("live");
        assertEquals("LIVE 1 1 0 0", exporter.awaitLine("LIVE", WAIT), "and their exporter halves released");
    }

    @Test
    void anImportPastItsDeadlineTearsItsQueuePairsDownAndMisses() {
        ChildJvm exporter = exporter();
        ChildJvm importer = importer(exporter, 500, "KVM_FAKE_VERBS_DELAY_US=5000");
        String[] fetched = fetch(importer);
        assertExactPrefixMiss(fetched, "FAILED");
        importer.send("live");
        assertEquals("LIVE 1 1 0 0", importer.awaitLine("LIVE", WAIT));
    }
}
