package io.kvmarket.redis;

import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.registry.PublishOutcome;
import io.kvmarket.registry.RegistryException;
import io.kvmarket.registry.Withdrawal;
import io.lettuce.core.ClientOptions;
import io.lettuce.core.KeyValue;
import io.lettuce.core.RedisClient;
import io.lettuce.core.RedisFuture;
import io.lettuce.core.RedisNoScriptException;
import io.lettuce.core.RedisURI;
import io.lettuce.core.ScriptOutputType;
import io.lettuce.core.TimeoutOptions;
import io.lettuce.core.api.StatefulRedisConnection;
import io.lettuce.core.api.sync.RedisCommands;
import io.lettuce.core.codec.ByteArrayCodec;
import io.lettuce.core.codec.RedisCodec;
import io.lettuce.core.codec.StringCodec;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.function.LongSupplier;

/**
 * The cluster registry: every node's offers in one Redis, through Lettuce. One hash per chunk
 * ({@link OfferCodec}); a lookup of N chunks is one read-only script, one round trip; every write is one Lua script
 * on one chunk ({@link RedisScripts}). One Redis server: the lookup script reads keys of many slots, which a Redis
 * Cluster refuses. An owner process is alive while its key, refreshed every
 * {@value #HEARTBEAT_MS} ms with a {@value #OWNER_TTL_MS} ms expiry in Redis server time, exists: a dead owner's
 * offers stop being served within that, and are replaced by the next publication of their key. Redis down or
 * slow: every call fails within the command timeout with a {@link RegistryException}, which the marketplace turns
 * into a miss or a skipped export, and the connection recovers by itself. Values that are not this format's are
 * skipped with a log line, never trusted.
 */
public final class RedisRegistry implements OfferRegistry {

    /** How long an owner's key lives without a heartbeat. */
    public static final long OWNER_TTL_MS = 2_500;
    static final long HEARTBEAT_MS = 800;
    /** How long this process trusts an owner's liveness it read. */
    static final long LIVENESS_CACHE_MS = 250;
    /** Kept past a lease so that a renewal racing the expiry still finds its entry. */
    private static final long GC_GRACE_MS = 60_000;

    private static final Logger LOG = LoggerFactory.getLogger(RedisRegistry.class);
    private static final RedisCodec<String, byte[]> CODEC = RedisCodec.of(StringCodec.UTF8, ByteArrayCodec.INSTANCE);

    private final RedisClient client;
    private final StatefulRedisConnection<String, byte[]> connection;
    private final String prefix;
    private final LongSupplier clockMs;
    private final Map<String, String> shas = new ConcurrentHashMap<>();
    /** Owners this registry published for that are this process: their keys are kept alive here. */
    private final Set<String> ownKeys = ConcurrentHashMap.newKeySet();
    private final Map<String, long[]> liveness = new ConcurrentHashMap<>();
    private final ScheduledExecutorService heartbeat;
    private final long slowLogMs;

    /**
     * @param uri            e.g. {@code redis://127.0.0.1:6379}
     * @param prefix         key prefix, e.g. {@code kvm}: registries of different prefixes never see each other
     * @param commandTimeout bound on every call, Redis down or slow included
     * @param clockMs        the clock leases and pins are judged by: all nodes must agree, so in production a
     *                       clock that follows Redis server time ({@link #serverClock})
     */
    public RedisRegistry(RedisClient client, String prefix, Duration commandTimeout, LongSupplier clockMs) {
        this.client = client;
        this.prefix = prefix;
        this.clockMs = clockMs;
        this.slowLogMs = commandTimeout.toMillis();
        client.setOptions(ClientOptions.builder()
                .disconnectedBehavior(ClientOptions.DisconnectedBehavior.REJECT_COMMANDS)
                .timeoutOptions(TimeoutOptions.enabled(commandTimeout))
                .build());
        try {
            this.connection = client.connect(CODEC);
        } catch (RuntimeException e) {
            throw new RegistryException("cannot connect to Redis: " + e.getMessage(), e);
        }
        connection.setTimeout(commandTimeout);
        this.heartbeat = Executors.newSingleThreadScheduledExecutor(r -> {
            Thread t = new Thread(r, "kvmarket-redis-heartbeat");
            t.setDaemon(true);
            return t;
        });
        heartbeat.scheduleWithFixedDelay(this::beat, HEARTBEAT_MS, HEARTBEAT_MS, TimeUnit.MILLISECONDS);
    }

    /** Connects to {@code uri} with prefix {@code kvm}, a 100 ms command timeout and Redis server time. */
    public static RedisRegistry open(String uri) {
        return open(uri, "kvm");
    }

    /** As {@link #open(String)}, under another key prefix. */
    public static RedisRegistry open(String uri, String prefix) {
        RedisClient client = RedisClient.create(RedisURI.create(uri));
        try {
            return new RedisRegistry(client, prefix, Duration.ofMillis(100), serverClock(client, uri));
        } catch (RuntimeException e) {
            client.shutdown();
            throw e;
        }
    }

    /**
     * A clock that follows Redis server time: the offset to this host's clock is read once with {@code TIME},
     * so every node judges leases by the same clock however far its own has drifted.
     */
    public static LongSupplier serverClock(RedisClient client, String uri) {
        try (StatefulRedisConnection<String, String> c = client.connect()) {
            long before = System.currentTimeMillis();
            List<String> time = c.sync().time();
            long after = System.currentTimeMillis();
            long server = Long.parseLong(time.get(0)) * 1000 + Long.parseLong(time.get(1)) / 1000;
            long offset = server - (before + after) / 2;
            return () -> System.currentTimeMillis() + offset;
        } catch (RuntimeException e) {
            throw new RegistryException("cannot read the time of Redis at " + uri + ": " + e.getMessage(), e);
        }
    }

    @Override
    public long clockMillis() {
        return clockMs.getAsLong();
    }

    @Override
    public PublishOutcome publish(Offer offer) {
        String key = OfferCodec.hashKey(prefix, offer.key());
        byte[] identity = OfferCodec.identity(offer);
        String owner = OfferCodec.ownerKey(prefix, offer.nodeId(), offer.owner());
        if (offer.owner().equals(ProcessIdentity.current()) && ownKeys.add(owner)) {
            beat(owner); // alive before its first offer is
        }
        for (int attempt = 0; attempt < 2; attempt++) {
            List<KeyValue<String, byte[]>> cur = call(() -> commands().hmget(key, "o", "l"));
            byte[] expected = cur.get(0).hasValue() ? cur.get(0).getValue() : new byte[0];
            Offer existing = decode(offer.key(), cur);
            if (existing != null && served(existing, clockMillis())) {
                return PublishOutcome.ALREADY_OFFERED;
            }
            // Absent, expired, its owner dead, or foreign: replaced only if still what was read.
            if (script(RedisScripts.PUBLISH, key, expected, identity, OfferCodec.lease(offer.leaseExpiryMs()),
                    ascii(gcTtl(offer.leaseExpiryMs()))) == 1) {
                return PublishOutcome.PUBLISHED;
            }
        }
        return PublishOutcome.ALREADY_OFFERED; // another publisher won both races
    }

    @Override
    public List<Offer> lookupPrefix(ChunkKey[] keys, int maxChunks) {
        int limit = Math.min(keys.length, maxChunks);
        if (limit == 0) {
            return List.of();
        }
        String[] hashKeys = new String[limit];
        for (int i = 0; i < limit; i++) {
            hashKeys[i] = OfferCodec.hashKey(prefix, keys[i]);
        }
        // One script reads the whole prefix server-side, up to the first chunk with no offer: one command, one
        // round trip, however many chunks.
        List<byte[]> fields = call(() -> {
            try {
                return commands().<List<byte[]>>evalsha(sha(RedisScripts.LOOKUP), ScriptOutputType.MULTI, hashKeys);
            } catch (RedisNoScriptException restarted) {
                shas.remove(RedisScripts.LOOKUP);
                return commands().<List<byte[]>>evalsha(sha(RedisScripts.LOOKUP), ScriptOutputType.MULTI, hashKeys);
            }
        });
        long now = clockMillis();
        List<Offer> found = new ArrayList<>(fields.size() / 2);
        for (int i = 0; 2 * i + 1 < fields.size(); i++) {
            Offer o = decode(keys[i], fields.get(2 * i), fields.get(2 * i + 1));
            if (o == null || !served(o, now)) {
                break;
            }
            found.add(o);
        }
        return found;
    }

    @Override
    public Offer lookup(ChunkKey key) {
        List<Offer> found = lookupPrefix(new ChunkKey[] {key}, 1);
        return found.isEmpty() ? null : found.get(0);
    }

    @Override
    public boolean pin(Offer offer, long leaseMs) {
        long now = clockMillis();
        long expiry = OfferRegistry.expiry(now, leaseMs);
        return script(RedisScripts.PIN, OfferCodec.hashKey(prefix, offer.key()), OfferCodec.identity(offer),
                ascii(expiry), ascii(now)) == 1;
    }

    @Override
    public void unpin(Offer offer) {
        script(RedisScripts.UNPIN, OfferCodec.hashKey(prefix, offer.key()), OfferCodec.identity(offer));
    }

    @Override
    public boolean isCurrent(Offer offer) {
        byte[] stored = call(() -> commands().hget(OfferCodec.hashKey(prefix, offer.key()), "o"));
        return java.util.Arrays.equals(stored, OfferCodec.identity(offer));
    }

    /** Pipelined: one round trip for every pin of a match. */
    @Override
    public boolean[] pinAll(List<Offer> offers, long leaseMs) {
        long now = clockMillis();
        byte[] expiry = ascii(OfferRegistry.expiry(now, leaseMs));
        byte[] at = ascii(now);
        List<RedisFuture<Long>> pins = new ArrayList<>(offers.size());
        String sha = sha(RedisScripts.PIN);
        for (Offer o : offers) {
            pins.add(connection.async().evalsha(sha, ScriptOutputType.INTEGER,
                    new String[] {OfferCodec.hashKey(prefix, o.key())}, OfferCodec.identity(o), expiry, at));
        }
        boolean[] pinned = new boolean[offers.size()];
        for (int i = 0; i < pinned.length; i++) {
            try {
                pinned[i] = awaited(pins.get(i)) == 1;
            } catch (RegistryException e) {
                forgetIfUnloaded(RedisScripts.PIN, e);
                pinned[i] = false; // this pin is a miss; one that did land lapses with its lease
            }
        }
        return pinned;
    }

    /** Pipelined: one round trip for every unpin of a load. */
    @Override
    public void unpinAll(List<Offer> offers) {
        String sha = sha(RedisScripts.UNPIN);
        List<RedisFuture<Long>> unpins = new ArrayList<>(offers.size());
        for (Offer o : offers) {
            unpins.add(connection.async().evalsha(sha, ScriptOutputType.INTEGER,
                    new String[] {OfferCodec.hashKey(prefix, o.key())}, OfferCodec.identity(o)));
        }
        for (RedisFuture<Long> u : unpins) {
            try {
                awaited(u);
            } catch (RegistryException e) {
                forgetIfUnloaded(RedisScripts.UNPIN, e);
                throw e;
            }
        }
    }

    /** Pipelined: one round trip for the check after a load's copy. */
    @Override
    public boolean[] areCurrent(List<Offer> offers) {
        List<RedisFuture<byte[]>> reads = new ArrayList<>(offers.size());
        for (Offer o : offers) {
            reads.add(connection.async().hget(OfferCodec.hashKey(prefix, o.key()), "o"));
        }
        boolean[] current = new boolean[offers.size()];
        for (int i = 0; i < current.length; i++) {
            current[i] = java.util.Arrays.equals(awaited(reads.get(i)), OfferCodec.identity(offers.get(i)));
        }
        return current;
    }

    /** A Redis that restarted since the script was loaded answers NOSCRIPT: load it again next time. */
    private void forgetIfUnloaded(String body, RegistryException e) {
        for (Throwable c = e; c != null; c = c.getCause()) {
            if (c instanceof RedisNoScriptException) {
                shas.remove(body);
                return;
            }
        }
    }

    private <T> T awaited(RedisFuture<T> f) {
        return call(() -> f.get(slowLogMs, TimeUnit.MILLISECONDS));
    }

    @Override
    public Withdrawal withdrawIfUnused(Offer offer, long usedSinceMs) {
        long r = script(RedisScripts.WITHDRAW_IF_UNUSED, OfferCodec.hashKey(prefix, offer.key()),
                OfferCodec.identity(offer), ascii(usedSinceMs), ascii(clockMillis()));
        return r == 1 ? Withdrawal.PINNED : r == 2 ? Withdrawal.IMPORTED_SINCE : Withdrawal.WITHDRAWN;
    }

    @Override
    public void withdraw(Offer offer) {
        script(RedisScripts.WITHDRAW, OfferCodec.hashKey(prefix, offer.key()), OfferCodec.identity(offer));
    }

    @Override
    public boolean renew(Offer offer, long leaseExpiryMs) {
        return script(RedisScripts.RENEW, OfferCodec.hashKey(prefix, offer.key()), OfferCodec.identity(offer),
                OfferCodec.lease(leaseExpiryMs), ascii(gcTtl(leaseExpiryMs))) == 1;
    }

    /** Stops the heartbeat (this process's offers stop being served within the owner TTL) and disconnects. */
    @Override
    public void close() {
        heartbeat.shutdownNow();
        connection.close();
        client.shutdown(Duration.ZERO, Duration.ofSeconds(2));
    }

    // ---- liveness

    private boolean served(Offer o, long nowMs) {
        return o.leaseExpiryMs() > nowMs && ownerAlive(o);
    }

    /** This process is alive; another owner is while its key exists, as read at most {@value #LIVENESS_CACHE_MS} ms ago. */
    private boolean ownerAlive(Offer o) {
        if (o.owner().equals(ProcessIdentity.current()) && ownKeys.contains(OfferCodec.ownerKey(prefix, o.nodeId(),
                o.owner()))) {
            return true;
        }
        String key = OfferCodec.ownerKey(prefix, o.nodeId(), o.owner());
        long now = System.nanoTime();
        long[] cached = liveness.get(key);
        if (cached != null && now - cached[0] < TimeUnit.MILLISECONDS.toNanos(LIVENESS_CACHE_MS)) {
            return cached[1] != 0;
        }
        boolean alive = call(() -> commands().exists(key)) > 0;
        liveness.put(key, new long[] {now, alive ? 1 : 0});
        return alive;
    }

    private void beat() {
        for (String owner : ownKeys) {
            try {
                beat(owner);
            } catch (RuntimeException e) {
                LOG.warn("Redis heartbeat of {} failed; its offers stop being served in {} ms unless it recovers: {}",
                        owner, OWNER_TTL_MS, e.getMessage());
            }
        }
    }

    private void beat(String owner) {
        call(() -> commands().psetex(owner, OWNER_TTL_MS, new byte[] {1}));
    }

    // ---- plumbing

    private Offer decode(ChunkKey key, List<KeyValue<String, byte[]>> fields) {
        return fields.get(0).hasValue() ? decode(key, fields.get(0).getValue(), fields.get(1).getValueOrElse(null))
                : null;
    }

    private Offer decode(ChunkKey key, byte[] identity, byte[] lease) {
        try {
            return OfferCodec.decode(key, identity, lease);
        } catch (IllegalArgumentException foreign) {
            LOG.warn("skipping a value under {} that is not an offer: {}", OfferCodec.hashKey(prefix, key),
                    foreign.getMessage());
            return null;
        }
    }

    private long gcTtl(long leaseExpiryMs) {
        long left = Math.max(0, Math.min(leaseExpiryMs - clockMillis(), TimeUnit.DAYS.toMillis(1)));
        return left + GC_GRACE_MS;
    }

    private static byte[] ascii(long v) {
        return Long.toString(v).getBytes(StandardCharsets.US_ASCII);
    }

    private RedisCommands<String, byte[]> commands() {
        return connection.sync();
    }

    /** Runs one script on one chunk's hash, loading it once per Redis (again after a restart). */
    private long script(String body, String key, byte[]... args) {
        return call(() -> {
            try {
                return commands().<Long>evalsha(sha(body), ScriptOutputType.INTEGER, new String[] {key}, args);
            } catch (RedisNoScriptException restarted) {
                shas.remove(body);
                return commands().<Long>evalsha(sha(body), ScriptOutputType.INTEGER, new String[] {key}, args);
            }
        });
    }

    /**
     * The script's SHA, loaded into Redis when this registry first runs it. A Redis that restarted since answers
     * NOSCRIPT: a pipelined call then fails as a miss and forgets the SHA, so the next call loads it again.
     */
    private String sha(String body) {
        return call(() -> shas.computeIfAbsent(body, b -> commands().scriptLoad(b)));
    }

    private interface RedisCall<T> {
        T run() throws Exception;
    }

    /** Every failure of Redis (down, slow, refused) is the registry's failure, which the marketplace turns into a miss. */
    private static <T> T call(RedisCall<T> c) {
        try {
            return c.run();
        } catch (RegistryException e) {
            throw e;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new RegistryException("interrupted waiting for Redis", e);
        } catch (Exception e) {
            throw new RegistryException("Redis: " + e.getMessage(), e);
        }
    }
}
