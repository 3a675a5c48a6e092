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

    private static final String SKIPPED = "RDMA tests skipped: built without the verbs headers (no libibverbs-dev)";
    private static boolean said;

    static void require() {
        String dir = System.getProperty("kvmarket.test.fakeVerbs");
        if (dir == null) {
            synchronized (FakeVerbs.class) {
                if (!said) { // a class-level skip shows as no test at all: say why once
                    said = true;
                    System.out.println(SKIPPED);
                }
            }
        }
        Assumptions.assumeTrue(dir != null, SKIPPED);
        assertNull(Verbs.unavailabilityCause(), () -> "verbs over the fake provider must work: "
                + Verbs.unavailabilityCause());
    }

    /** The folder holding the fake {@code libibverbs.so.1}, for child processes' {@code LD_LIBRARY_PATH}. */
    static Path dir() {
        return Path.of(System.getProperty("kvmarket.test.fakeVerbs"));
    }
}
