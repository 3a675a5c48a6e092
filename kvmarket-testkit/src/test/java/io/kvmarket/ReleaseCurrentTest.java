package io.kvmarket;

import io.kvmarket.device.host.HostBuffer;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.registry.InProcessRegistry;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.registry.RegistryException;
import io.kvmarket.registry.Withdrawal;
import io.kvmarket.registry.shm.NodeLocalRegistry;
import io.kvmarket.testkit.FaultyTransport;
import io.kvmarket.testkit.KvFixture;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.lang.reflect.InvocationHandler;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Proxy;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.Set;

import static io.kvmarket.testkit.KvFixture.NS;
import static io.kvmarket.testkit.KvFixture.scattered;
import static io.kvmarket.testkit.KvFixture.tokens;
import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * The check after a load's copy and the release of its pins, made in one registry call: a chunk withdrawn and
 * overwritten after its bytes landed is not counted, and the pins are released whatever the check answered, also
 * when the check itself failed.
 */
class ReleaseCurrentTest {

    @TempDir
    Path dir;

    private OfferRegistry registry(String kind) {
        return kind.equals("node-local") ? NodeLocalRegistry.open(dir, 1024) : new InProcessRegistry();
    }

    @ParameterizedTest
    @ValueSource(strings = {"node-local", "in-process"})
    void aChunkWithdrawnAndOverwrittenAfterTheCopyIsNotCountedAndNoPinStays(String kind) throws Exception {
        OfferRegistry registry = registry(kind);
        FaultyTransport[] importerSide = new FaultyTransport[1];
        try (registry; KvFixture a = new KvFixture(dir, registry, 8);
             KvFixture b = new KvFixture(dir, registry, 8, NS, t -> importerSide[0] = new FaultyTransport(t))) {
            int[] prompt = tokens(128, 4);
            int[] blocks = scattered(8, 4);
            a.fill(blocks, 8, 4);
            a.market.export(prompt, 128, blocks);
            ChunkKey[] keys = a.market.hasher().keys(prompt, 128);
            Offer[] offers = new Offer[4];
            for (int i = 0; i < 4; i++) {
                offers[i] = registry.lookup(keys[i]);
            }
            Match m = b.market.match(prompt, 128);
            assertEquals(128, m.tokens());
            importerSide[0].afterFetch = o -> {
                registry.withdraw(offers[1]);
                ByteBuffer pool = ((HostBuffer) a.market.pool().buffer()).memory();
                for (long i = offers[1].offset(); i < offers[1].offset() + offers[1].length(); i++) {
                    pool.put((int) i, (byte) 0x5a);
                }
            };
            LoadResult r = b.market.load(m, scattered(8, 6)).join();
            assertEquals(32, r.tokensImported(), r.toString());
            assertEquals(MissReason.SOURCE_CHANGED, r.reason());
            for (int i : new int[] {0, 2, 3}) {
                assertEquals(Withdrawal.WITHDRAWN, registry.withdrawIfUnused(offers[i], Long.MAX_VALUE),
                        "chunk " + i + " still pinned after the load");
            }
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"node-local", "in-process"})
    void aFailedCheckIsAMissAndStillReleasesThePins(String kind) throws Exception {
        OfferRegistry real = registry(kind);
        boolean[] checkDown = {false};
        Set<String> checks = Set.of("isCurrent", "areCurrent");
        OfferRegistry flaky = (OfferRegistry) Proxy.newProxyInstance(getClass().getClassLoader(),
                new Class<?>[] {OfferRegistry.class}, (proxy, method, args) -> {
                    if (checkDown[0] && checks.contains(method.getName())) {
                        throw new RegistryException("check unavailable (injected)");
                    }
                    if (method.isDefault()) {
                        return InvocationHandler.invokeDefault(proxy, method, args);
                    }
                    try {
                        return method.invoke(real, args);
                    } catch (InvocationTargetException e) {
                        throw e.getCause();
                    }
                });
        try (real; KvFixture a = new KvFixture(dir, real, 8); KvFixture b = new KvFixture(dir, flaky, 8)) {
            int[] prompt = tokens(64, 9);
            int[] blocks = scattered(4, 9);
            a.fill(blocks, 4, 9);
            a.market.export(prompt, 64, blocks);
            ChunkKey[] keys = a.market.hasher().keys(prompt, 64);
            Match m = b.market.match(prompt, 64);
            assertEquals(64, m.tokens());
            checkDown[0] = true;
            LoadResult r = b.market.load(m, scattered(4, 10)).join();
            assertEquals(0, r.tokensImported(), "a registry failure at the check is a miss");
            for (ChunkKey k : keys) {
                assertEquals(Withdrawal.WITHDRAWN, real.withdrawIfUnused(real.lookup(k), Long.MAX_VALUE),
                        "the load's pin is still held after a failed check");
            }
        }
    }
}
