package io.kvmarket;

import io.kvmarket.device.Device;
import io.kvmarket.key.Namespace;
import io.kvmarket.key.PrefixHasher;
import io.kvmarket.kv.ChunkFormat;
import io.kvmarket.kv.PagedKvCache;
import io.kvmarket.node.NodeId;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.transfer.Transport;

import java.util.List;

/**
 * What the importer, the exporter and the lease keeper share (the prefill cost is null when the engine gave none), handed to each when the marketplace is built (as
 * Aeron's MediaDriver.Context is), so none of them reaches back into the facade or into another.
 */
record MarketplaceContext(Namespace namespace, PagedKvCache kvCache, Device device, OfferRegistry registry,
                          List<Transport> transports, PrefixHasher hasher, ChunkFormat format, long layoutFingerprint,
                          long pinLeaseMs, long offerLeaseMs, MarketplaceMetrics metrics, PrefillCost prefillCost) {

    ProcessIdentity self() {
        return ProcessIdentity.current();
    }

    long nodeId() {
        return NodeId.local();
    }
}
