package io.kvmarket;

import io.kvmarket.key.ChunkKey;
import io.kvmarket.registry.InProcessRegistry;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.registry.RegistryException;
import io.kvmarket.registry.Withdrawal;
import io.kvmarket.registry.shm.NodeLocalRegistry;
import io.kvmarket.testkit.CheckAfterCopy;
import io.kvmarket.testkit.KvFixture;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.lang.reflect.InvocationHandler;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Proxy;
import java.nio.file.Path;
import java.util.Set;

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
        try (OfferRegistry registry = registry(kind)) {
            CheckAfterCopy.aChunkWithdrawnAndOverwrittenAfterTheCopyIsNotCountedAndNoPinStays(dir, registry, registry);
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
