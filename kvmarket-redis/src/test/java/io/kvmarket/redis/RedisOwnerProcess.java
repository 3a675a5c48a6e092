package io.kvmarket.redis;

import io.kvmarket.node.NodeId;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Endpoint;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.PublishOutcome;

import java.util.List;

/** {@code URI PREFIX}: publishes one offer of chunk (1, 2) as this process, prints READY, waits to be killed. */
public final class RedisOwnerProcess {

    public static void main(String[] args) throws Exception {
        RedisRegistry registry = RedisRegistry.open(args[0], args[1]);
        Offer o = new Offer(new io.kvmarket.key.ChunkKey(1, 2), NodeId.local(), ProcessIdentity.current(),
                List.of(new Endpoint(Endpoint.TCP, new byte[] {1})), 0, 64, 1, 1, registry.clockMillis() + 600_000);
        System.out.println("READY " + (registry.publish(o) == PublishOutcome.PUBLISHED));
        System.out.flush();
        while (System.in.read() >= 0) {
            // until killed
        }
    }
}
