package io.kvmarket.transfer.rdma;

import org.junit.jupiter.api.Assumptions;

import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertNull;

/**
 * The test fake verbs provider ({@code src/test/native/fakeverbs}), which the verbs build profile builds and puts first
 * on {@code LD_LIBRARY_PATH} for this module's tests: RC READ/WRITE over TCP between processes. Where the profile did
 * not run (no verbs headers), RDMA tests skip with one line; where it did, verbs must work over the fake, so a broken
 * shim fails the tests instead of skipping them.
 */
final class FakeVerbs {

    private FakeVerbs() {
    }

    static void require() {
        String dir = System.getProperty("kvmarket.test.fakeVerbs");
        Assumptions.assumeTrue(dir != null, "RDMA tests skipped: built without the verbs headers (no libibverbs-dev)");
        assertNull(Verbs.unavailabilityCause(), () -> "verbs over the fake provider must work: "
                + Verbs.unavailabilityCause());
    }

    /** The folder holding the fake {@code libibverbs.so.1}, for child processes' {@code LD_LIBRARY_PATH}. */
    static Path dir() {
        return Path.of(System.getProperty("kvmarket.test.fakeVerbs"));
    }
}
