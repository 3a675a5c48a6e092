package io.kvmarket.redis;

import io.kvmarket.KvMarketplace;
import io.kvmarket.Match;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.kv.PagedKvCache;
import io.kvmarket.testkit.DeviceBytes;
import io.kvmarket.testkit.KvFixture;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;

/**
 * One engine of a node for the cross-node tests, on the host device in its node's private /dev/shm and the Redis
 * registry at {@code URI}. {@code export URI SALT}: exports a 128-token prompt, prints READY, waits. {@code import
 * URI}: for each stdin line {@code match SALT}, prints {@code MATCH <tokens> <reason>}.
 */
public final class NodeProcess {

    public static void main(String[] args) throws Exception {
        try (RedisRegistry registry = RedisRegistry.open(args[1]);
             KvFixture engine = new KvFixture(new HostDevice(), DeviceBytes.HOST, true, registry, KvFixture.NS, t -> t,
                     b -> b.poolBytes(8 * KvFixture.chunkBytes(KvFixture.LAYOUT, KvFixture.CHUNK)))) {
            BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
            if (args[0].equals("export")) {
                int salt = Integer.parseInt(args[2]);
                int[] blocks = KvFixture.scattered(8, salt);
                engine.fill(blocks, 8, salt);
                System.out.println("READY " + engine.market.export(KvFixture.tokens(128, salt), 128, blocks)
                        .chunksPublished());
                System.out.flush();
                while (in.readLine() != null) {
                    // until stdin closes or the process is killed
                }
                return;
            }
            System.out.println("READY");
            System.out.flush();
            for (String line = in.readLine(); line != null; line = in.readLine()) {
                int salt = Integer.parseInt(line.substring("match ".length()).trim());
                Match m = engine.market.match(KvFixture.tokens(128, salt), 128);
                System.out.println("MATCH " + m.tokens() + " " + m.reason());
                System.out.flush();
                engine.market.release(m);
            }
        }
    }
}
