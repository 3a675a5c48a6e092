package io.kvmarket.transfer.rdma;

import io.kvmarket.device.DeviceBuffer;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.testkit.ChildJvm;
import io.kvmarket.transfer.PushTransport;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * A push target ended by another thread (its owner's close(), its timeout, the transport's close) while its wait
 * thread is blocked in kvm_rdma_poll on the target's queue pairs: only the wait thread may destroy them, the others
 * only fail them. Each case runs in a child JVM (a crash must not take the test JVM down); a cluster member that
 * connected to the push and wrote nothing (as a sender that died or stalled mid-push) keeps the wait thread polling.
 */
@Timeout(120)
class RdmaPushTeardownRaceTest {

    private final List<ChildJvm> children = new ArrayList<>();

    @BeforeAll
    static void verbs() {
        FakeVerbs.require();
    }

    @AfterEach
    void kill() {
        children.forEach(ChildJvm::close);
    }

    @ParameterizedTest
    @ValueSource(strings = {"close", "timeout", "transport-close"})
    void aTargetEndedWhileItsAwaitThreadPollsDoesNotCrashTheJvm(String how) throws Exception {
        ChildJvm c = ChildJvm.start(Node.class, List.of("-XX:ErrorFile=" + System.getProperty("java.io.tmpdir")
                + "/pushattack_hs_err_%p.log"), how, "12");
        children.add(c);
        String line;
        try {
            line = c.awaitLine("SURVIVED", Duration.ofSeconds(90));
        } catch (IllegalStateException e) {
            line = "child died: " + e.getMessage() + ", exit status " + c.stop(Duration.ofSeconds(10))
                    + " (134 = SIGABRT from the JVM's fatal error handler)";
        }
        assertEquals("SURVIVED", line, how);
    }

    /** {@code Node MODE ROUNDS}: opens a receiver and a hostile member in this process and ends targets MODE-wise. */
    public static final class Node {
        public static void main(String[] args) throws Exception {
            String mode = args[0];
            int rounds = Integer.parseInt(args[1]);
            Path dir = Files.createTempDirectory("push-attack-node");
            try (HostDevice device = new HostDevice(dir)) {
                DeviceBuffer dst = device.allocate(1 << 20);
                for (int r = 0; r < rounds; r++) {
                    RdmaTransport receiver = RdmaTransport.open(device, 1, RdmaTransportContractTest.serving());
                    RdmaTransport hostile = RdmaTransport.open(device, 2, RdmaTransportContractTest.importing());
                    PushTransport.PushTarget t = receiver.expectPush(dst, new long[] {0, 8192}, new long[] {4096, 4096},
                            mode.equals("timeout") ? 400 : 30_000);
                    Pushes.Ticket ticket = Pushes.Ticket.decode(t.ticket());
                    QpChannel ch = hostile.channel(1, 4, 0, 0);
                    byte[] fields = ByteBuffer.allocate(20).putInt(ticket.id()).putLong(ticket.token()).putInt(2)
                            .putInt(4).array();
                    byte[] answer = hostile.peer(ticket.control()).call(QpSetup.of(ch, hostile.context())
                            .encode(Pushes.PUSH_CONNECT, fields));
                    if (answer[0] != RdmaTransport.OK) {
                        throw new AssertionError("refused: " + RdmaTransport.why(answer));
                    }
                    hostile.connect(ch, QpSetup.decode(ByteBuffer.wrap(answer).position(1)));
                    Thread.sleep(150); // the receiver's await thread is now inside kvm_rdma_poll
                    switch (mode) {
                        case "close" -> t.close();
                        case "transport-close" -> receiver.close();
                        default -> {
                            // the timer ends it
                        }
                    }
                    try {
                        t.landed().join();
                    } catch (RuntimeException e) {
                        // failed, as it should
                    }
                    Thread.sleep(300); // the await thread wakes from its poll
                    ch.close();
                    hostile.close();
                    receiver.close();
                    System.out.println("ROUND " + r);
                    System.out.flush();
                }
            }
            System.out.println("SURVIVED");
            System.out.flush();
        }
    }
}
