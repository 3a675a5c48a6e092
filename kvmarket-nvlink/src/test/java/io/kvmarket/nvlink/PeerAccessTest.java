package io.kvmarket.nvlink;

import io.kvmarket.device.DeviceUnreachableException;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Peer-access decisions on a made-up node: GPU 0 (this device) and 1 share NVLink, GPU 2 has no peer path. */
class PeerAccessTest {

    static final String GPU0 = "0000:1b:00.0";
    static final String GPU1 = "0000:43:00.0";
    static final String GPU2 = "0000:52:00.0";
    static final String HIDDEN = "0000:9a:00.0";

    final List<String> calls = new ArrayList<>();
    final PeerAccess access = new PeerAccess(0, new PeerAccess.Topology() {
        final Map<String, Integer> visible = Map.of(GPU0, 0, GPU1, 1, GPU2, 2);

        public int ordinalOf(String pciBusId) {
            calls.add("ordinalOf " + pciBusId);
            return visible.getOrDefault(pciBusId, -1);
        }

        public boolean canAccessPeer(int peer) {
            calls.add("canAccess " + peer);
            return Set.of(1).contains(peer);
        }

        public void enablePeerAccess(int peer) {
            calls.add("enable " + peer);
        }
    });

    @Test
    void memoryOnTheSameGpuNeedsNoPeerAccess() {
        access.ensureReadable(GPU0, false);
        access.ensureReadable(GPU0, true);
        assertEquals(List.of("ordinalOf " + GPU0, "ordinalOf " + GPU0), calls);
    }

    @Test
    void ipcMappingOfAPeerGpuIsCheckedOnceAndEnabledByTheOpenItself() {
        access.ensureReadable(GPU1, false);
        access.ensureReadable(GPU1, false);
        assertEquals(List.of("ordinalOf " + GPU1, "canAccess 1"), calls);
    }

    @Test
    void ownAllocationOnAPeerGpuEnablesPeerAccessOnce() {
        access.ensureReadable(GPU1, true);
        access.ensureReadable(GPU1, true);
        assertEquals(List.of("ordinalOf " + GPU1, "canAccess 1", "enable 1"), calls);
    }

    @Test
    void gpuWithoutPeerPathIsUnreachableEveryTime() {
        for (int i = 0; i < 2; i++) {
            DeviceUnreachableException e = assertThrows(DeviceUnreachableException.class,
                    () -> access.ensureReadable(GPU2, false));
            assertTrue(e.getMessage().contains("no NVLink or PCIe peer-to-peer"), e.getMessage());
        }
        assertEquals(false, calls.contains("enable 2"));
    }

    @Test
    void gpuHiddenFromThisProcessIsUnreachable() {
        DeviceUnreachableException e = assertThrows(DeviceUnreachableException.class,
                () -> access.ensureReadable(HIDDEN, false));
        assertTrue(e.getMessage().contains("not visible"), e.getMessage());
    }
}
