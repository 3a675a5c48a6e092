package io.kvmarket.publicapi;

import io.kvmarket.registry.Endpoint;
import io.kvmarket.LoadResult;
import io.kvmarket.Match;
import io.kvmarket.MissReason;
import io.kvmarket.device.host.HostDevice;
import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.MappedFaults;
import io.kvmarket.node.NodeId;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.PublishOutcome;
import io.kvmarket.registry.RegistryException;
import io.kvmarket.registry.shm.NodeLocalRegistry;
import io.kvmarket.testkit.KvFixture;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;

import static io.kvmarket.testkit.KvPattern.range;
import static io.kvmarket.testkit.KvPattern.tokens;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

@Timeout(60)
class DamagedNodeFilesTest {

    private static final int HEADER = 128;
    private static final int SLOT = 512;
    private static final int ENDPOINTS_LENGTH = 120;

    @TempDir
    Path dir;

    private static Offer offer(long slot, long generation) {
        byte[] handle = new byte[44];
        Arrays.fill(handle, (byte) 7);
        return Offer.of(new ChunkKey(slot * 1_000_003L, slot), NodeId.local(), ProcessIdentity.current(),
                new Endpoint(Endpoint.DEVICE_IPC, handle), 0, 64, 1, generation, System.currentTimeMillis() + 60_000);
    }

    private static void writeLong(Path file, long position, long value) throws Exception {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.WRITE)) {
            ch.write(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(0, value), position);
        }
    }

    /**
     * One live offer whose handle length another process zeroed: it is never served, and the next rebuild (which
     * runs whenever tombstones pass 1/8 of the table) drops it and keeps every healthy offer.
     */
    @Test
    void oneDamagedSlotIsPassedOverAndARebuildKeepsEveryHealthyOffer() throws Exception {
        try (NodeLocalRegistry registry = NodeLocalRegistry.open(dir, 16)) {
            List<Offer> healthy = new ArrayList<>();
            for (long s = 0; s < 4; s++) {
                Offer o = offer(s, 100 + s);
                assertEquals(PublishOutcome.PUBLISHED, registry.publish(o));
                healthy.add(o);
            }
            Offer damaged = offer(8, 200);
            assertEquals(PublishOutcome.PUBLISHED, registry.publish(damaged));
            List<Offer> toWithdraw = new ArrayList<>();
            for (long s = 10; s < 13; s++) {
                Offer o = offer(s, 300 + s);
                assertEquals(PublishOutcome.PUBLISHED, registry.publish(o));
                toWithdraw.add(o);
            }
            writeLong(registry.file(), HEADER + 8L * SLOT + ENDPOINTS_LENGTH, 0); // another process's stray write
            assertNull(registry.lookup(damaged.key()), "a damaged slot is not served");
            RuntimeException thrown = null;
            for (Offer o : toWithdraw) {
                try {
                    registry.withdraw(o); // the third tombstone (> 16/8) triggers a rebuild
                } catch (RuntimeException e) {
                    thrown = e;
                }
            }
            assertNull(thrown, "a rebuild meeting a damaged slot failed the withdraw that triggered it");
            List<Offer> lost = new ArrayList<>();
            for (Offer o : healthy) {
                if (!registry.isCurrent(o)) {
                    lost.add(o);
                }
            }
            assertEquals(List.of(), lost, "healthy offers dropped by a rebuild that met one damaged slot (withdraw threw "
                    + thrown + ")");
        }
    }

    /** A FIFO planted in place of the registry file: opening must fail cleanly and promptly, not hang. */
    @Test
    void aFifoInPlaceOfTheRegistryFileIsRefusedPromptly() throws Exception {
        Path node = dir.resolve("node");
        NodeLocalRegistry.open(node, 16).close();
        Path file = node.resolve(NodeLocalRegistry.FILE_NAME);
        Files.delete(file);
        Process mk = new ProcessBuilder("mkfifo", file.toString()).start();
        assertEquals(0, mk.waitFor());
        assertTimeoutPreemptively(Duration.ofSeconds(5),
                () -> assertThrows(IllegalStateException.class, () -> NodeLocalRegistry.open(node, 16)));
    }

    /**
     * A registry file that is a symlink to another user's world-writable file (planted while the directory was
     * open, before it was made private) is refused. Needs root to give the file to another user.
     */
    @Test
    void aRegistryFileThatIsASymlinkToAnotherUsersFileIsRefused() throws Exception {
        org.junit.jupiter.api.Assumptions.assumeTrue("root".equals(System.getProperty("user.name")),
                "needs root to give a file to another user; skipped");
        Path node = dir.resolve("node");
        Path elsewhere = Files.createDirectory(dir.resolve("elsewhere"));
        NodeLocalRegistry.open(elsewhere.resolve("n"), 16).close();
        Path theirs = elsewhere.resolve("n").resolve(NodeLocalRegistry.FILE_NAME);
        Files.setPosixFilePermissions(theirs, PosixFilePermissions.fromString("rw-rw-rw-"));
        Files.setAttribute(theirs, "unix:uid", 65534, LinkOption.NOFOLLOW_LINKS);
        Files.createDirectory(node, PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rwx------")));
        Files.createSymbolicLink(node.resolve(NodeLocalRegistry.FILE_NAME), theirs);
        assertThrows(IllegalStateException.class, () -> NodeLocalRegistry.open(node, 16).close(),
                "a registry file that is a symlink to another user's world-writable file was accepted");
    }

    /**
     * A FIFO in place of an exporter's memory file (same user only: the directory is private): an import must end
     * as a miss, not block the loading thread and then close() forever.
     */
    @Test
    void aFifoInPlaceOfAPeerMemoryFileDoesNotHangALoad() throws Exception {
        io.kvmarket.registry.InProcessRegistry registry = new io.kvmarket.registry.InProcessRegistry();
        try (HostDevice exporterDevice = new HostDevice(dir); HostDevice importerDevice = new HostDevice(dir)) {
            Set<Path> before = Rig.memoryFiles(dir);
            KvFixture exporter = Rig.engine(exporterDevice, registry, 4);
            Set<Path> files = new HashSet<>(Rig.memoryFiles(dir));
            files.removeAll(before);
            KvFixture importer = Rig.engine(importerDevice, registry, 4);
            int[] p = tokens(64, 1);
            exporter.fill(range(0, 4), 4, 1);
            assertEquals(2, exporter.market.export(p, 64, range(0, 4)).chunksPublished());
            // the pool is the later of the exporter's two allocations
            Path pool = files.stream().max((a, b) -> Long.compare(seq(a), seq(b))).orElseThrow();
            Files.delete(pool);
            assertEquals(0, new ProcessBuilder("mkfifo", pool.toString()).start().waitFor());
            Match m = importer.market.match(p, 64);
            assertEquals(64, m.tokens());
            CompletableFuture<LoadResult> load = CompletableFuture.supplyAsync(
                    () -> importer.market.load(m, range(8, 4)).join());
            LoadResult r;
            try {
                r = load.get(5, TimeUnit.SECONDS);
            } catch (java.util.concurrent.TimeoutException e) {
                // unblock the stuck open(2) so the JVM can go on
                try (FileChannel w = FileChannel.open(pool, StandardOpenOption.WRITE)) {
                    assertNotNull(w);
                }
                throw new AssertionError("load() blocked opening a FIFO planted as a peer memory file");
            }
            assertTrue(r.isMiss());
        }
    }

    private static long seq(Path p) {
        String n = p.getFileName().toString();
        return Long.parseLong(n.substring(n.lastIndexOf('-') + 1, n.indexOf('.')));
    }
    /**
     * Another process truncates an exporter's pool file after an importer mapped it: the copy faults (SIGBUS), the
     * import is a miss with nothing counted, and the importer's device goes on copying (its copy engine survives).
     */
    @Test
    void aPeerPoolFileTruncatedUnderItsMappingIsAMissAndTheDeviceGoesOn() throws Exception {
        try (NodeLocalRegistry registry = NodeLocalRegistry.open(dir, 1024);
             KvFixture exporter = new KvFixture(dir, registry, 4);
             KvFixture importer = new KvFixture(dir, registry, 2)) {
            int[] prompt = KvFixture.tokens(64, 1);
            int[] exported = KvFixture.scattered(4, 1);
            exporter.fill(exported, 4, 11);
            assertEquals(2, exporter.market.export(prompt, 64, exported).chunksPublished());
            int[] first = KvFixture.scattered(4, 5);
            assertEquals(64, importer.market.load(importer.market.match(prompt, 64), first)
                    .get(10, TimeUnit.SECONDS).tokensImported(), "the first import maps the exporter's pool");
            Match again = importer.market.match(prompt, 64);
            assertEquals(64, again.tokens());
            try (FileChannel ch = FileChannel.open(poolFile(4 * exporter.chunkBytes()), StandardOpenOption.WRITE)) {
                ch.truncate(0);
            }
            LoadResult r = importer.market.load(again, KvFixture.scattered(4, 2)).get(10, TimeUnit.SECONDS);
            assertEquals(0, r.tokensImported(), "nothing of a truncated source counts as imported: " + r);
            int[] own = KvFixture.scattered(2, 3);
            importer.fill(own, 2, 22);
            assertEquals(1, importer.market.export(KvFixture.tokens(32, 2), 32, own).chunksPublished(),
                    "the importer's device still copies (its export copies into its pool)");
        }
    }

    /** The exporter's pool file: the only memory file of the node of that size. */
    private Path poolFile(long bytes) throws Exception {
        try (var files = Files.list(dir.resolve("host-device"))) {
            List<Path> pools = files.filter(p -> {
                try {
                    return Files.size(p) == bytes;
                } catch (java.io.IOException e) {
                    return false;
                }
            }).toList();
            assertEquals(1, pools.size(), "the exporter's pool file among " + pools);
            return pools.get(0);
        }
    }

    /**
     * The registry's calls compiled by the JIT, then the file truncated under them: the JVM reports a fault in compiled
     * code only at its next safepoint poll, which may lie past the registry's handler (the InternalError then
     * surfaced in the caller: found in a full build). Every call must fail as the registry's failure, and nothing
     * else may surface later.
     */
    @Test
    void callsCompiledByTheJitFailAsTheRegistrysOnATruncatedFile() throws Exception {
        try (NodeLocalRegistry registry = NodeLocalRegistry.open(dir, 1024)) {
            List<Offer> offers = publishedAndCompiled(registry, 16);
            ChunkKey[] keys = offers.stream().map(Offer::key).toArray(ChunkKey[]::new);
            try (FileChannel ch = FileChannel.open(registry.file(), StandardOpenOption.WRITE)) {
                ch.truncate(HEADER);
            }
            int failed = 0;
            try {
                for (int round = 0; round < 2_000; round++) {
                    for (Runnable call : List.<Runnable>of(() -> registry.lookupPrefix(keys, 16),
                            () -> registry.releaseCurrent(offers))) {
                        try {
                            call.run();
                        } catch (RegistryException expected) {
                            failed++;
                        }
                    }
                    assertArrayEquals(new boolean[offers.size()], registry.pinAll(offers, 10_000));
                }
            } catch (InternalError e) {
                throw new AssertionError("a fault escaped the registry after " + failed + " calls", e);
            }
            assertEquals(4_000, failed, "every call fails as the registry's failure");
        }
    }

    /**
     * The file cut under four threads calling the registry, then grown back to its length: the opening serves no
     * more, whatever the file's size later (a reviewer's race of cuts and regrowths surfaced InternalErrors over and
     * over while each call only checked the size). Only calls already past the check when the file was cut may
     * still fault, one per thread at most, reported where the JVM reports it.
     */
    @Test
    void anOpeningWhoseFileWasCutServesNoMoreEvenOnceRegrown() throws Exception {
        try (NodeLocalRegistry registry = NodeLocalRegistry.open(dir, 1024)) {
            List<Offer> offers = publishedAndCompiled(registry, 32);
            ChunkKey[] keys = offers.stream().map(Offer::key).toArray(ChunkKey[]::new);
            long full = Files.size(registry.file());
            AtomicInteger failures = new AtomicInteger();
            AtomicInteger faults = new AtomicInteger();
            AtomicInteger answeredAfterRegrowth = new AtomicInteger();
            AtomicBoolean regrown = new AtomicBoolean();
            AtomicBoolean stop = new AtomicBoolean();
            List<Thread> callers = new ArrayList<>();
            for (int t = 0; t < 4; t++) {
                int which = t;
                Thread caller = new Thread(() -> {
                    while (!stop.get()) {
                        boolean after = regrown.get();
                        try {
                            switch (which) {
                                case 0 -> registry.lookupPrefix(keys, 32);
                                case 1 -> registry.releaseCurrent(offers);
                                case 2 -> registry.isCurrent(offers.get(3));
                                default -> registry.lookup(keys[5]);
                            }
                            if (after) {
                                answeredAfterRegrowth.incrementAndGet();
                            }
                        } catch (RegistryException expected) {
                            failures.incrementAndGet();
                        } catch (InternalError e) {
                            assertTrue(MappedFaults.isFault(e), e::toString);
                            faults.incrementAndGet();
                        }
                    }
                });
                callers.add(caller);
                caller.start();
            }
            Thread.sleep(200);
            try (FileChannel ch = FileChannel.open(registry.file(), StandardOpenOption.WRITE)) {
                ch.truncate(4096);
                assertThrows(RegistryException.class, () -> registry.lookup(keys[0]), "the cut is found");
                ch.write(ByteBuffer.allocate(1), full - 1); // grown back, as long as before
            }
            regrown.set(true);
            Thread.sleep(300);
            stop.set(true);
            for (Thread caller : callers) {
                caller.join();
            }
            assertTrue(failures.get() > 0, "no caller met the registry's failure");
            assertEquals(0, answeredAfterRegrowth.get(), "calls answered once the file had its length again");
            assertTrue(faults.get() <= callers.size(), faults.get() + " faults reported: more than the calls in flight"
                    + " when the file was cut");
            assertThrows(RegistryException.class, () -> registry.lookupPrefix(keys, 32));
        }
    }

    /** A closed registry fails every call, writes included, and opens nothing again (a reviewer's descriptor leak). */
    @Test
    void aClosedRegistryFailsEveryCallAndLeaksNoDescriptor() throws Exception {
        Offer o = offer(1, 1);
        for (int round = 0; round < 2; round++) { // the first loads what the calls need
            long before = openDescriptors();
            for (int i = 0; i < 50; i++) {
                NodeLocalRegistry registry = NodeLocalRegistry.open(dir, 1024);
                registry.close();
                assertThrows(RegistryException.class, () -> registry.publish(o));
                assertThrows(RegistryException.class, () -> registry.withdraw(o));
                assertThrows(RegistryException.class, () -> registry.lookup(o.key()));
                assertArrayEquals(new boolean[1], registry.pinAll(List.of(o), 1000));
            }
            long after = openDescriptors();
            if (round == 1) { // each leaked channel would be one of 100
                assertTrue(after - before < 10, "descriptors left open by calls on closed registries: " + before
                        + " before, " + after + " after");
            }
        }
    }

    /**
     * The JVM reports a fault over a truncated mapping at its next safepoint poll, which can fall in the importer's
     * own code after the registry's call returned (a reviewer saw it surface from match() 43 times in 60 rounds of a
     * file cut under two matching threads). Here the registry's calls throw that error themselves, as such a late
     * report looks to the importer: a match is a miss, a load that cannot check its offers imports nothing, a release
     * goes on.
     */
    @Test
    void aFaultReportedInTheImportersCodeIsARegistryMiss() throws Exception {
        InternalError fault = new InternalError("a fault occurred in a recent unsafe memory access operation in"
                + " compiled Java code");
        class Faulting implements io.kvmarket.registry.OfferRegistry {
            final io.kvmarket.registry.InProcessRegistry d = new io.kvmarket.registry.InProcessRegistry();
            volatile boolean lookups;
            volatile boolean releases;

            @Override public PublishOutcome publish(Offer o) { return d.publish(o); }
            @Override public List<Offer> lookupPrefix(ChunkKey[] k, int m) {
                if (lookups) {
                    throw fault;
                }
                return d.lookupPrefix(k, m);
            }
            @Override public Offer lookup(ChunkKey k) { return d.lookup(k); }
            @Override public boolean pin(Offer o, long l) { return d.pin(o, l); }
            @Override public void unpin(Offer o) {
                if (releases) {
                    throw fault;
                }
                d.unpin(o);
            }
            @Override public boolean isCurrent(Offer o) {
                if (releases) {
                    throw fault;
                }
                return d.isCurrent(o);
            }
            @Override public io.kvmarket.registry.Withdrawal withdrawIfUnused(Offer o, long u) {
                return d.withdrawIfUnused(o, u);
            }
            @Override public void withdraw(Offer o) { d.withdraw(o); }
            @Override public long clockMillis() { return d.clockMillis(); }
            @Override public boolean renew(Offer o, long e) { return d.renew(o, e); }
            @Override public void close() { d.close(); }
        }
        try (Faulting registry = new Faulting(); KvFixture engine = new KvFixture(dir, registry, 4)) {
            int[] prompt = KvFixture.tokens(64, 1);
            int[] blocks = KvFixture.scattered(4, 1);
            engine.fill(blocks, 4, 11);
            assertEquals(2, engine.market.export(prompt, 64, blocks).chunksPublished());
            registry.lookups = true;
            Match m = engine.market.match(prompt, 64);
            assertEquals(MissReason.REGISTRY_UNAVAILABLE, m.reason());
            assertEquals(0, m.tokens());
            registry.lookups = false;
            registry.releases = true;
            engine.market.release(engine.market.match(prompt, 64));
            LoadResult r = engine.market.load(engine.market.match(prompt, 64), KvFixture.scattered(4, 2))
                    .get(10, TimeUnit.SECONDS);
            assertEquals(0, r.tokensImported(), "offers that cannot be checked after the copy count for nothing: " + r);
            assertEquals(MissReason.REGISTRY_UNAVAILABLE, r.reason(), "the registry failed; no offer changed");
            registry.releases = false;
        }
    }

    /** {@code n} offers published in {@code registry}, then its calls run until the JIT has compiled them. */
    private static List<Offer> publishedAndCompiled(NodeLocalRegistry registry, int n) {
        List<Offer> offers = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            offers.add(offer(i + 1, 1));
            assertEquals(PublishOutcome.PUBLISHED, registry.publish(offers.get(i)));
        }
        ChunkKey[] keys = offers.stream().map(Offer::key).toArray(ChunkKey[]::new);
        for (int round = 0; round < 30_000; round++) { // enough for C2 to compile them
            assertEquals(n, registry.lookupPrefix(keys, n).size());
            registry.pinAll(offers, 10_000);
            registry.releaseCurrent(offers);
        }
        return offers;
    }

    private static long openDescriptors() throws Exception {
        try (var fds = Files.list(Path.of("/proc/self/fd"))) {
            return fds.count();
        }
    }

    /**
     * Another process truncates the registry file under running engines: the mapping faults (SIGBUS), which is a
     * miss of the registry for a match, a skipped export, and a close that still frees everything.
     */
    @Test
    void aRegistryFileTruncatedUnderRunningEnginesIsARegistryMissNotAnError() throws Exception {
        try (NodeLocalRegistry registry = NodeLocalRegistry.open(dir, 1024);
             KvFixture engine = new KvFixture(dir, registry, 4)) {
            int[] prompt = KvFixture.tokens(64, 1);
            int[] blocks = KvFixture.scattered(4, 1);
            engine.fill(blocks, 4, 11);
            assertEquals(2, engine.market.export(prompt, 64, blocks).chunksPublished());
            try (FileChannel ch = FileChannel.open(registry.file(), StandardOpenOption.WRITE)) {
                ch.truncate(HEADER); // the header kept, the slots gone
            }
            Match m = engine.market.match(prompt, 64);
            assertEquals(0, m.tokens());
            assertEquals(MissReason.REGISTRY_UNAVAILABLE, m.reason());
            assertEquals(0, engine.market.export(KvFixture.tokens(64, 2), 64, blocks).chunksPublished());
        } // closing withdraws through the faulting file: it must still free the pool and not throw
    }
}
