package io.kvmarket.node;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

class ProcessIdentityTest {

    @Test
    void aChildIsAliveUntilItExitsAndItsStartTimeIsStable() throws Exception {
        Process child = new ProcessBuilder("sleep", "30").start();
        try {
            ProcessIdentity id = ProcessIdentity.of(child.toHandle());
            assertEquals(id, ProcessIdentity.of(child.toHandle()), "the same process reads the same identity");
            assertNotEquals(0, id.startTime());
            assertTrue(id.isAlive());
            assertFalse(new ProcessIdentity(id.pid(), id.startTime() + 1).isAlive(), "another start is another process");
        } finally {
            child.destroyForcibly().waitFor();
        }
        assertFalse(ProcessIdentity.of(child.toHandle()).isAlive());
    }

    @Test
    void onLinuxTheStartTimeComesFromProcStat() {
        long ticks = ProcessIdentity.procStartTicks(ProcessHandle.current().pid());
        if (ticks >= 0) {
            assertEquals(ticks, ProcessIdentity.current().startTime());
        }
        assertEquals(-1, ProcessIdentity.procStartTicks(-5));
    }
}
