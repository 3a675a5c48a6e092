package io.kvmarket.nvlink;

import io.kvmarket.device.DeviceUnreachableException;

import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Whether one GPU may read memory that lives on another GPU of the node, as an import does when exporter and
 * importer sit on different GPUs: the copy runs on the importer's GPU and reads the exporter's pool over NVLink or
 * PCIe peer-to-peer. Exporters name their GPU by PCI bus id, since ordinals differ between processes
 * ({@code CUDA_VISIBLE_DEVICES}). A GPU pair without a peer path, or a GPU hidden from this process, is reported as
 * unreachable before anything is mapped; a pair found good is remembered.
 */
final class PeerAccess {

    /** What CUDA says about the node's GPUs, seen from one device; a seam so the decisions are tested without GPUs. */
    interface Topology {

        /** This process's ordinal of the GPU at {@code pciBusId}, or -1 when this process cannot see it. */
        int ordinalOf(String pciBusId);

        /** cudaDeviceCanAccessPeer from this device. */
        boolean canAccessPeer(int peerOrdinal);

        /** cudaDeviceEnablePeerAccess from this device's context; enabling twice is not an error. */
        void enablePeerAccess(int peerOrdinal);
    }

    private final int ordinal;
    private final Topology topology;
    /** GPUs found readable through IPC mappings, and those with peer access enabled in this context. */
    private final Set<String> readableMapped = ConcurrentHashMap.newKeySet();
    private final Set<String> readableOwn = ConcurrentHashMap.newKeySet();

    PeerAccess(int ordinal, Topology topology) {
        this.ordinal = ordinal;
        this.topology = topology;
    }

    /**
     * Makes memory on the GPU at {@code pciBusId} readable by kernels and copies on this device.
     *
     * @param sameProcess the memory is this process's own allocation, so peer access must be enabled in this
     *                    context here; an IPC mapping enables it on open (cudaIpcMemLazyEnablePeerAccess)
     * @throws DeviceUnreachableException when this GPU cannot read that one directly
     */
    void ensureReadable(String pciBusId, boolean sameProcess) {
        Set<String> known = sameProcess ? readableOwn : readableMapped;
        if (known.contains(pciBusId)) {
            return;
        }
        int peer = topology.ordinalOf(pciBusId);
        if (peer < 0) {
            throw new DeviceUnreachableException("the exporter's GPU " + pciBusId
                    + " is not visible to this process (CUDA_VISIBLE_DEVICES), so its memory cannot be mapped");
        }
        if (peer != ordinal) {
            if (!topology.canAccessPeer(peer)) {
                throw new DeviceUnreachableException("GPU " + ordinal + " cannot read GPU " + peer + " (" + pciBusId
                        + ") directly: no NVLink or PCIe peer-to-peer path between them");
            }
            if (sameProcess) {
                topology.enablePeerAccess(peer);
            }
        }
        known.add(pciBusId);
    }
}
