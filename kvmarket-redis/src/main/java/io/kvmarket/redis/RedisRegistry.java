package io.kvmarket.redis;

import io.kvmarket.key.ChunkKey;
import io.kvmarket.node.ProcessIdentity;
import io.kvmarket.registry.Offer;
import io.kvmarket.registry.OfferRegistry;
import io.kvmarket.registry.PublishOutcome;
import io.kvmarket.registry.RegistryException;
import io.kvmarket.registry.Withdrawal;
import io.lettuce.core.AbstractRedisClient;
import io.lettuce.core.ClientOptions;
import io.lettuce.core.KeyValue;
import io.lettuce.core.RedisCommandExecutionException;
import io.lettuce.core.RedisClient;
import io.lettuce.core.RedisFuture;
import io.lettuce.core.RedisNoScriptException;
import io.lettuce.core.RedisURI;
import io.lettuce.core.ScriptOutputType;
import io.lettuce.core.SocketOptions;
import io.lettuce.core.TimeoutOptions;
import io.lettuce.core.api.StatefulConnection;
import io.lettuce.core.api.StatefulRedisConnection;
import io.lettuce.core.api.async.RedisAsyncCommands;
import io.lettuce.core.cluster.ClusterClientOptions;
import io.lettuce.core.cluster.ClusterTopologyRefreshOptions;
import io.lettuce.core.cluster.RedisClusterClient;
import io.lettuce.core.cluster.SlotHash;
import io.lettuce.core.cluster.api.StatefulRedisClusterConnection;
import io.lettuce.core.cluster.api.async.RedisClusterAsyncCommands;
import io.lettuce.core.cluster.api.sync.RedisClusterCommands;
import io.lettuce.core.cluster.models.partitions.RedisClusterNode;
import io.lettuce.core.codec.ByteArrayCodec;
import io.lettuce.core.codec.RedisCodec;
import io.lettuce.core.codec.StringCodec;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;
import java.util.function.IntFunction;
import java.util.function.LongSupplier;
import java.util.function.Predicate;
import java.util.stream.IntStream;

/**
 * The cluster registry: every node's offers in one Redis server or one Redis Cluster ({@value #CLUSTER_SCHEME} URI),
 * through Lettuce. One record per chunk, a string ({@link OfferCodec}); a lookup of N chunks is one {@code MGET}, one
 * round trip and no Lua (on a Redis Cluster, one read-only script per node over the keys it serves, sent to all
 * nodes at once); every write is a Lua step on one chunk's record ({@link RedisScripts}); the pins, checks and
 * withdrawals of many chunks are one
 * script per window of keys on one Redis, one per key on a Redis Cluster, pipelined; batched publishes are
 * pipelined. An owner process is alive while its key, refreshed every {@value #HEARTBEAT_MS} ms with a
 * {@value #OWNER_TTL_MS} ms expiry in Redis server time, exists: a dead owner's offers stop being served within that,
 * and the next publication of their key replaces them.
 * Redis down or slow: every call fails within the command timeout with a {@link RegistryException}, which the
 * marketplace turns into a miss or a skipped export, and the connection recovers by itself. Values that are not this
 * format's are skipped with a log line and replaced by the next publication, never trusted.
 */
public final class RedisRegistry implements OfferRegistry {

    /** How long an owner's key lives without a heartbeat. */
    public static final long OWNER_TTL_MS = 2_500;
    static final long HEARTBEAT_MS = 800;
    private static final Duration OPEN_TIMEOUT = Duration.ofSeconds(2);
    /** How long this process trusts an owner's liveness it read. */
    static final long LIVENESS_CACHE_MS = 250;
    /** Kept past a lease so that a renewal racing the expiry still finds its entry. */
    private static final long GC_GRACE_MS = 60_000;
    private static final int LIVENESS_CACHE_LIMIT = 4096;
    /** Pipelines in windows of this many commands, each window given the command timeout of its own. */
    static final int PIPELINE_WINDOW = 512;
    /** Keys per script of a batched step on one Redis. */
    static final int SCRIPT_WINDOW = 128;
    /** Keys per {@code MGET} of a lookup on one Redis. */
    static final int MGET_KEYS = 256;
    private static final byte[] NONE = new byte[0];
    private static final byte[] FOREIGN = {'!'};
    /** A URI naming a node of a Redis Cluster, from which the client learns the others. */
    public static final String CLUSTER_SCHEME = "redis-cluster://";

    private static final Logger LOG = LoggerFactory.getLogger(RedisRegistry.class);
    private static final RedisCodec<String, byte[]> CODEC = RedisCodec.of(StringCodec.UTF8, ByteArrayCodec.INSTANCE);

    private final AbstractRedisClient client;
    private final StatefulConnection<String, byte[]> connection;
    private final RedisClusterCommands<String, byte[]> sync;
    private final RedisClusterAsyncCommands<String, byte[]> async;
    /** A Redis Cluster: keys of one prompt lie in many slots, so writes name one key each and reads go per node. */
    private final boolean cluster;
    /**
     * Whether the cluster's nodes run a script over keys of several of their slots (Redis 7 and later); package
     * private so tests compare both ways of reading.
     */
    volatile boolean nodeScripts = true;
    private final String prefix;
    private final LongSupplier clockMs;
    private final long timeoutMs;
    private final Map<String, String> shas = new ConcurrentHashMap<>();
    /** Owner keys of this process that this registry published for: its heartbeat keeps them alive. */
    private final Map<String, Boolean> ownKeys = new ConcurrentHashMap<>();
    private final Map<String, long[]> liveness = new ConcurrentHashMap<>();
    private final ScheduledExecutorService heartbeat;

    /**
     * Connects to {@code uri} with a client of its own.
     *
     * @param prefix         key prefix, e.g. {@code kvm}: registries of different prefixes never see each other
     * @param commandTimeout bound on every call, Redis down or slow included; opening gets at least 2 s
     * @param clockMs        the clock leases and pins are judged by, which all nodes must share; null for Redis
     *                       server time (the offset to this host's clock is read once with {@code TIME})
     * @throws RegistryException       when Redis cannot be reached while opening
     * @throws IllegalArgumentException when {@code commandTimeout} is under 1 ms
     */
    public RedisRegistry(String uri, String prefix, Duration commandTimeout, LongSupplier clockMs) {
        if (commandTimeout.toMillis() < 1) {
            // Lettuce reads zero as "wait forever", and batched calls wait whole milliseconds.
            throw new IllegalArgumentException("commandTimeout must be at least 1 ms, got " + commandTimeout);
        }
        this.prefix = prefix;
        this.timeoutMs = commandTimeout.toMillis();
        // Opening runs once, in a JVM that may still be loading Netty: a handshake held to the 100 ms command bound
        // failed when several processes started together, so opening gets at least 2 s and calls get the bound.
        Duration opening = commandTimeout.compareTo(OPEN_TIMEOUT) > 0 ? commandTimeout : OPEN_TIMEOUT;
        this.cluster = uri.startsWith(CLUSTER_SCHEME);
        RedisURI redisUri = RedisURI.create(cluster ? "redis://" + uri.substring(CLUSTER_SCHEME.length()) : uri);
        redisUri.setTimeout(opening);
        SocketOptions socket = SocketOptions.builder().connectTimeout(opening).build();
        if (cluster) {
            RedisClusterClient clusterClient = RedisClusterClient.create(redisUri);
            clusterClient.setOptions(ClusterClientOptions.builder()
                    // Connections to the nodes open on first use, so a command may meet one still connecting: it
                    // waits, bounded by the command timeout, instead of failing at once.
                    .disconnectedBehavior(ClientOptions.DisconnectedBehavior.ACCEPT_COMMANDS)
                    .timeoutOptions(TimeoutOptions.enabled())
                    .socketOptions(socket)
                    // A failover moves slots: the topology is read again when a command meets MOVED or a lost node.
                    .topologyRefreshOptions(ClusterTopologyRefreshOptions.builder()
                            .enableAllAdaptiveRefreshTriggers().build())
                    .build());
            this.client = clusterClient;
        } else {
            RedisClient standalone = RedisClient.create(redisUri);
            standalone.setOptions(ClientOptions.builder()
                    .disconnectedBehavior(ClientOptions.DisconnectedBehavior.REJECT_COMMANDS)
                    .timeoutOptions(TimeoutOptions.enabled())
                    .socketOptions(socket)
                    .build());
            this.client = standalone;
        }
        try {
            if (cluster) {
                StatefulRedisClusterConnection<String, byte[]> c = ((RedisClusterClient) client).connect(CODEC);
                this.connection = c;
                this.sync = c.sync();
                this.async = c.async();
            } else {
                StatefulRedisConnection<String, byte[]> c = ((RedisClient) client).connect(CODEC);
                this.connection = c;
                this.sync = c.sync();
                this.async = c.async();
            }
            this.clockMs = clockMs != null ? clockMs : serverClock();
            connection.setTimeout(commandTimeout);
        } catch (RuntimeException e) {
            client.shutdown(Duration.ZERO, Duration.ofSeconds(2));
            throw new RegistryException("cannot reach Redis at " + uri + ": " + e.getMessage(), e);
        }
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
        return new RedisRegistry(uri, prefix, Duration.ofMillis(100), null);
    }

    /** Redis server time, followed through this host's clock from one {@code TIME} read. */
    private LongSupplier serverClock() {
        long before = System.currentTimeMillis();
        List<byte[]> time = sync.time();
        long after = System.currentTimeMillis();
        long server = Long.parseLong(ascii(time.get(0))) * 1000 + Long.parseLong(ascii(time.get(1))) / 1000;
        long offset = server - (before + after) / 2;
        return () -> System.currentTimeMillis() + offset;
    }

    @Override
    public long clockMillis() {
        return clockMs.getAsLong();
    }

    /**
     * Publishes unless a served offer holds the key. Beware a failure: a script that timed out here may still run
     * when Redis catches up, so the caller must treat the offer as possibly published (and withdraw it before
     * reusing its memory), which the marketplace's exporter does.
     */
    @Override
    public PublishOutcome publish(Offer offer) {
        String key = OfferCodec.hashKey(prefix, offer.key());
        beatingBefore(offer);
        for (int attempt = 0; attempt < 2; attempt++) {
            byte[] expected = replaceable(offer, current(key));
            if (expected == null) {
                return PublishOutcome.ALREADY_OFFERED;
            }
            long published = script(RedisScripts.PUBLISH, ScriptOutputType.INTEGER, key, publishArgs(offer, expected));
            if (published == 1) {
                return PublishOutcome.PUBLISHED;
            }
        }
        return PublishOutcome.ALREADY_OFFERED; // another publisher won both races
    }

    /** Concurrent first publications of this process wait for its first beat: none may land while it looks dead. */
    private void beatingBefore(Offer offer) {
        if (offer.owner().equals(ProcessIdentity.current())) {
            ownKeys.computeIfAbsent(OfferCodec.ownerKey(prefix, offer.nodeId(), offer.owner()), k -> {
                beat(k);
                return Boolean.TRUE;
            });
        }
    }

    /** What the key holds: its record, null when nothing, {@link #FOREIGN} when a value of another type. */
    private byte[] current(String key) {
        try {
            return script(RedisScripts.READ, ScriptOutputType.VALUE, key);
        } catch (RegistryException e) {
            if (wrongType(e)) {
                return FOREIGN;
            }
            throw e;
        }
    }

    /**
     * What a publication of {@code offer} may replace, given what {@link #current} found under its key: nothing,
     * something foreign, or an expired offer or one of a dead owner (its identity), as {@link RedisScripts#PUBLISH}
     * compares it; null when a served offer holds the key.
     */
    private byte[] replaceable(Offer offer, byte[] current) {
        if (current == null) {
            return NONE;
        }
        OfferCodec.Header h = current == FOREIGN ? null : OfferCodec.header(current);
        if (h == null) {
            LOG.warn("replacing something foreign under {}", OfferCodec.hashKey(prefix, offer.key()));
            return FOREIGN;
        }
        Offer existing = decode(offer.key(), current);
        // A dead verdict is read afresh before it replaces anything: a cached one may be stale.
        boolean served = existing != null && existing.leaseExpiryMs() > clockMillis()
                && (ownerAlive(existing, false) || ownerAlive(existing, true));
        return served ? null : h.identity(current);
    }

    /** PUBLISH's arguments: replaced only if the key still holds {@code expected}. */
    private byte[][] publishArgs(Offer offer, byte[] expected) {
        return new byte[][] {expected, OfferCodec.identity(offer), OfferCodec.lease(offer.leaseExpiryMs()),
                ascii(gcTtl(offer.leaseExpiryMs()))};
    }

    /**
     * Every read in one pipelined round trip, every conditional write in another; an offer whose read failed or
     * whose write lost a race goes through {@link #publish} alone. A write that failed is an unknown outcome (null),
     * never retried: it may still land, and retrying could then misread the offer as another's.
     */
    @Override
    public PublishOutcome[] publishAll(List<Offer> offers) {
        PublishOutcome[] outcomes = new PublishOutcome[offers.size()];
        if (offers.isEmpty()) {
            return outcomes;
        }
        try {
            offers.forEach(this::beatingBefore);
        } catch (RegistryException e) {
            return outcomes; // nothing written: unknown to the caller, as a failed publish would be
        }
        Object[] reads;
        try {
            reads = pipeline(offers.size(), RedisScripts.READ, ScriptOutputType.VALUE,
                    i -> new String[] {OfferCodec.hashKey(prefix, offers.get(i).key())}, i -> new byte[0][]);
        } catch (RegistryException e) {
            return outcomes; // nothing sent, or only reads: unknown to the caller, as a failed publish would be
        }
        byte[][] expected = new byte[offers.size()][];
        for (int i = 0; i < outcomes.length; i++) {
            if (reads[i] instanceof RegistryException e && !wrongType(e)) {
                continue; // nothing written for it: unknown to the caller, who keeps its memory until withdrawn
            }
            byte[] cur = reads[i] instanceof RegistryException ? FOREIGN : (byte[]) reads[i];
            try {
                expected[i] = replaceable(offers.get(i), cur);
            } catch (RegistryException e) {
                continue; // cannot tell whether it may be replaced: unknown
            }
            if (expected[i] == null) {
                outcomes[i] = PublishOutcome.ALREADY_OFFERED;
            }
        }
        int[] toWrite = IntStream.range(0, outcomes.length).filter(i -> expected[i] != null).toArray();
        Object[] writes;
        try {
            writes = pipeline(toWrite.length, RedisScripts.PUBLISH, ScriptOutputType.INTEGER,
                    j -> new String[] {OfferCodec.hashKey(prefix, offers.get(toWrite[j]).key())},
                    j -> publishArgs(offers.get(toWrite[j]), expected[toWrite[j]]));
        } catch (RegistryException e) {
            return outcomes; // some writes may have been sent: every undecided outcome stays unknown
        }
        for (int j = 0; j < toWrite.length; j++) {
            int i = toWrite[j];
            if (writes[j] instanceof Long written) {
                if (written == 1) {
                    outcomes[i] = PublishOutcome.PUBLISHED;
                } else { // the key changed since it was read, and nothing of ours was written: decided alone
                    try {
                        outcomes[i] = publish(offers.get(i));
                    } catch (RegistryException e) {
                        outcomes[i] = null;
                    }
                }
            } // a write that failed may still land: unknown (null), never retried
        }
        return outcomes;
    }

    /**
     * One {@code MGET} of the prompt's chunk keys on one Redis (Redis reads a key that holds nothing for well under a
     * microsecond, so it reads them all rather than run Lua to stop at the first); on a Redis Cluster, where they lie
     * in many slots, one script per node ({@link #lookupEach}). Cut at the first key not served.
     */
    @Override
    public List<Offer> lookupPrefix(ChunkKey[] keys, int maxChunks) {
        int limit = Math.min(keys.length, maxChunks);
        if (limit == 0) {
            return List.of();
        }
        Offer[] each = read(Arrays.asList(keys).subList(0, limit), true);
        List<Offer> found = new ArrayList<>(limit);
        for (Offer o : each) {
            if (o == null) {
                break;
            }
            found.add(o);
        }
        return found;
    }

    /**
     * One round trip: on one Redis, {@code MGET}s of {@value #MGET_KEYS} keys, pipelined; on a Redis Cluster, one
     * read-only script per node over the keys it serves, all nodes at once ({@link #readOnNodes}). A key whose read
     * failed fails the call, as a lookup would; a value that is not a record is foreign and skipped.
     */
    @Override
    public Offer[] lookupEach(List<ChunkKey> keys) {
        return read(keys, false);
    }

    /** {@link #lookupEach}; with {@code prefixOnly}, offers past the first key not served are not judged. */
    private Offer[] read(List<ChunkKey> keys, boolean prefixOnly) {
        if (keys.isEmpty()) {
            return new Offer[0];
        }
        if (!cluster) {
            String[] hashKeys = keys.stream().map(k -> OfferCodec.hashKey(prefix, k)).toArray(String[]::new);
            int windows = (hashKeys.length + MGET_KEYS - 1) / MGET_KEYS;
            Object[] reads = windowed(windows, w -> async.mget(Arrays.copyOfRange(hashKeys, w * MGET_KEYS,
                    Math.min(hashKeys.length, (w + 1) * MGET_KEYS))), true);
            Serving serving = new Serving();
            Offer[] found = new Offer[keys.size()];
            for (int w = 0; w < windows; w++) {
                if (reads[w] instanceof RegistryException e) {
                    throw e;
                }
                @SuppressWarnings("unchecked")
                List<KeyValue<String, byte[]>> values = (List<KeyValue<String, byte[]>>) reads[w];
                for (int k = 0; k < values.size(); k++) {
                    int i = w * MGET_KEYS + k;
                    byte[] value = values.get(k).getValueOrElse(null);
                    found[i] = value == null ? null : serving.served(decode(keys.get(i), value));
                    if (prefixOnly && found[i] == null) {
                        return found; // a lookup's prefix ends here: what follows would cost liveness reads
                    }
                }
            }
            return found;
        }
        Offer[] found = readOnNodes(keys);
        return found != null ? found : readEach(keys);
    }

    /**
     * Reads {@code keys} on a Redis Cluster with one script per node, sent to every node at once; null when some
     * node's part failed (its slots moving, a node down): the caller then reads key by key. A cluster whose nodes
     * cannot run such a script (a Redis before 7) is read key by key from then on, said once.
     */
    private Offer[] readOnNodes(List<ChunkKey> keys) {
        if (!nodeScripts) {
            return null;
        }
        @SuppressWarnings("unchecked")
        StatefulRedisClusterConnection<String, byte[]> c = (StatefulRedisClusterConnection<String, byte[]>) connection;
        String[] hashKeys = new String[keys.size()];
        Map<String, List<Integer>> byNode = new LinkedHashMap<>();
        for (int i = 0; i < hashKeys.length; i++) {
            hashKeys[i] = OfferCodec.hashKey(prefix, keys.get(i));
            RedisClusterNode node = c.getPartitions().getPartitionBySlot(SlotHash.getSlot(hashKeys[i]));
            if (node == null) {
                return null; // a slot nobody serves: the topology is being read again
            }
            byNode.computeIfAbsent(node.getNodeId(), n -> new ArrayList<>()).add(i);
        }
        // Each node's keys in calls of at most READ_ON_NODE_KEYS: (node, positions) per call.
        List<Map.Entry<String, List<Integer>>> calls = new ArrayList<>();
        byNode.forEach((node, positions) -> {
            for (int from = 0; from < positions.size(); from += RedisScripts.READ_ON_NODE_KEYS) {
                calls.add(Map.entry(node, positions.subList(from,
                        Math.min(positions.size(), from + RedisScripts.READ_ON_NODE_KEYS))));
            }
        });
        String body = RedisScripts.READ_ON_NODE;
        String sha = sha(body);
        Offer[] found = new Offer[keys.size()];
        try {
            List<RedisFuture<List<byte[]>>> sent = new ArrayList<>(calls.size());
            for (Map.Entry<String, List<Integer>> call : calls) {
                sent.add(nodeCall(c, call.getKey(), node -> node.evalsha(sha, ScriptOutputType.MULTI,
                        new String[0], keyArguments(hashKeys, call.getValue()))));
            }
            Serving serving = new Serving();
            long deadline = deadline();
            for (int j = 0; j < calls.size(); j++) {
                Map.Entry<String, List<Integer>> call = calls.get(j);
                Object answer = settled(sent.get(j), deadline);
                if (answer instanceof RegistryException failed && restarted(failed)) {
                    // The node never ran it (restarted, or new): sent whole, once.
                    answer = settled(nodeCall(c, call.getKey(), node -> node.<List<byte[]>>eval(body,
                            ScriptOutputType.MULTI, new String[0], keyArguments(hashKeys, call.getValue()))),
                            deadline());
                }
                if (answer instanceof RegistryException failed && !answered(failed)) {
                    throw failed; // a node that did not answer (down, slow) would not answer key by key either
                }
                if (!readInto(found, answer, call.getValue(), keys, serving)) {
                    if (answer instanceof RegistryException failed && cannotRunNodeScripts(failed)) {
                        nodeScripts = false;
                        LOG.info("Redis Cluster node {} runs no script over several slots ({}): lookups read key by"
                                + " key from now on", call.getKey(), failed.getMessage());
                    } else {
                        LOG.debug("cluster lookup on node {} failed, reading key by key: {}", call.getKey(),
                                answer instanceof Throwable t ? t.getMessage() : answer);
                    }
                    return null;
                }
            }
        } catch (RegistryException e) {
            if (!answered(e)) {
                throw e;
            }
            LOG.debug("cluster lookup by node failed, reading key by key: {}", e.getMessage());
            return null;
        }
        return found;
    }

    /**
     * Sends {@code send} to one node, its connection opened if need be within the command timeout; whatever fails
     * on the way (a client closed meanwhile included) is a {@link RegistryException}.
     */
    private <T> RedisFuture<T> nodeCall(StatefulRedisClusterConnection<String, byte[]> c, String nodeId,
                                        Function<RedisAsyncCommands<String, byte[]>, RedisFuture<T>> send) {
        return call(() -> send.apply(c.getConnectionAsync(nodeId).get(timeoutMs, TimeUnit.MILLISECONDS).async()));
    }

    /** Decodes one node's answer into {@code found} at {@code positions}; false when it is not such an answer. */
    private boolean readInto(Offer[] found, Object answer, List<Integer> positions, List<ChunkKey> keys,
                             Serving serving) {
        if (!(answer instanceof List<?> values) || values.size() != positions.size()
                || !values.stream().allMatch(v -> v == null || v instanceof byte[])) {
            return false;
        }
        for (int k = 0; k < positions.size(); k++) {
            int i = positions.get(k);
            if (values.get(k) instanceof byte[] value) {
                found[i] = serving.served(decode(keys.get(i), value));
            }
        }
        return true;
    }

    /**
     * Redis refused the script itself: a Redis before 7 reads its flag line as Lua and fails to compile it; a busy,
     * loading or moving node is only for now.
     */
    private static boolean cannotRunNodeScripts(RegistryException e) {
        return causedBy(e, c -> {
            String m = String.valueOf(c.getMessage());
            return c instanceof RedisCommandExecutionException
                    && (m.contains("compiling script") || m.contains("shebang") || m.contains("flag"));
        });
    }

    private static byte[][] keyArguments(String[] hashKeys, List<Integer> positions) {
        byte[][] args = new byte[positions.size()][];
        for (int k = 0; k < args.length; k++) {
            args[k] = hashKeys[positions.get(k)].getBytes(StandardCharsets.UTF_8);
        }
        return args;
    }

    /** Pipelined plain {@code GET}s, a window at a time: one round trip, no script per key. */
    private Offer[] readEach(List<ChunkKey> keys) {
        Object[] reads = windowed(keys.size(), i -> async.get(OfferCodec.hashKey(prefix, keys.get(i))), true);
        Serving serving = new Serving();
        Offer[] found = new Offer[keys.size()];
        for (int i = 0; i < found.length; i++) {
            if (reads[i] instanceof RegistryException e) {
                if (!wrongType(e)) {
                    throw e;
                }
                LOG.warn("skipping something foreign under {}", OfferCodec.hashKey(prefix, keys.get(i)));
                continue;
            }
            if (reads[i] instanceof byte[] value) {
                found[i] = serving.served(decode(keys.get(i), value));
            }
        }
        return found;
    }

    /**
     * Judges the offers of one read by one time, asking about each run of offers of one owner once: a prompt's
     * chunks mostly share their owner.
     */
    private final class Serving {

        private final long now = clockMillis();
        private Offer judged;
        private boolean alive;

        /** {@code o} when it is still served (lease running, owner alive), else null. */
        Offer served(Offer o) {
            if (o == null || o.leaseExpiryMs() <= now) {
                return null;
            }
            if (judged == null || judged.nodeId() != o.nodeId() || !judged.owner().equals(o.owner())) {
                alive = ownerAlive(o, false);
                judged = o;
            }
            return alive ? o : null;
        }
    }

    private static boolean wrongType(RegistryException e) {
        return causedBy(e, c -> c instanceof RedisCommandExecutionException
                && String.valueOf(c.getMessage()).startsWith("WRONGTYPE"));
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
        return (long) script(RedisScripts.PIN.one(), ScriptOutputType.INTEGER, OfferCodec.hashKey(prefix, offer.key()),
                OfferCodec.identity(offer), ascii(expiry), ascii(now)) == 1;
    }

    @Override
    public void unpin(Offer offer) {
        script(RedisScripts.UNPIN.one(), ScriptOutputType.INTEGER, OfferCodec.hashKey(prefix, offer.key()),
                OfferCodec.identity(offer));
    }

    @Override
    public boolean isCurrent(Offer offer) {
        return (long) script(RedisScripts.CHECK.one(), ScriptOutputType.INTEGER, OfferCodec.hashKey(prefix, offer.key()),
                OfferCodec.identity(offer)) == 1;
    }

    /** One round trip for every pin of a match ({@link #eachKey}); false where a pin failed. */
    @Override
    public boolean[] pinAll(List<Offer> offers, long leaseMs) {
        long now = clockMillis();
        try { // a failed pin is a miss; one that landed lapses
            return answeredOne(RedisScripts.PIN, offers, new byte[][] {ascii(OfferRegistry.expiry(now, leaseMs)),
                    ascii(now)});
        } catch (RegistryException e) {
            return new boolean[offers.size()];
        }
    }

    /** One round trip for every unpin of a load ({@link #eachKey}). */
    @Override
    public void unpinAll(List<Offer> offers) {
        Object[] unpins = eachKey(RedisScripts.UNPIN, offers, new byte[0][],
                i -> new byte[][] {OfferCodec.identity(offers.get(i))});
        for (int i = 0; i < unpins.length; i++) {
            if (unpins[i] instanceof RegistryException e) {
                throw e;
            }
            if (unpins[i] instanceof Long u && u == -1) {
                throw new RegistryException("Redis failed to unpin " + offers.get(i));
            }
        }
    }

    /** One round trip for the check after a load's copy ({@link #eachKey}); false where it cannot be proven current. */
    @Override
    public boolean[] areCurrent(List<Offer> offers) {
        return answeredOne(RedisScripts.CHECK, offers, new byte[0][]);
    }

    /** One round trip ({@link #eachKey}): the unpin step answers whether the offer was current as it unpinned it. */
    @Override
    public boolean[] releaseCurrent(List<Offer> offers) {
        return answeredOne(RedisScripts.UNPIN, offers, new byte[0][]);
    }

    /** {@code step} of each offer, its identity its own argument: true where it answered 1. */
    private boolean[] answeredOne(RedisScripts.KeyScript step, List<Offer> offers, byte[][] shared) {
        Object[] answers = eachKey(step, offers, shared, i -> new byte[][] {OfferCodec.identity(offers.get(i))});
        boolean[] one = new boolean[offers.size()];
        for (int i = 0; i < one.length; i++) {
            one[i] = answers[i] instanceof Long a && a == 1;
        }
        return one;
    }

    @Override
    public Withdrawal withdrawIfUnused(Offer offer, long usedSinceMs) {
        long r = script(RedisScripts.WITHDRAW_IF_UNUSED.one(), ScriptOutputType.INTEGER,
                OfferCodec.hashKey(prefix, offer.key()), OfferCodec.identity(offer), ascii(usedSinceMs),
                ascii(clockMillis()));
        return withdrawal(r);
    }

    /** What {@link RedisScripts#WITHDRAW_IF_UNUSED} answered. */
    private static Withdrawal withdrawal(long code) {
        return code == 1 ? Withdrawal.PINNED : code == 2 ? Withdrawal.IMPORTED_SINCE : Withdrawal.WITHDRAWN;
    }

    /** One round trip for the lot ({@link #eachKey}). */
    @Override
    public Withdrawal[] withdrawIfUnused(List<Offer> offers, long[] usedSinceMs) {
        if (offers.size() != usedSinceMs.length) {
            throw new IllegalArgumentException(offers.size() + " offers, " + usedSinceMs.length + " times");
        }
        Object[] r = eachKey(RedisScripts.WITHDRAW_IF_UNUSED, offers, new byte[][] {ascii(clockMillis())},
                i -> new byte[][] {OfferCodec.identity(offers.get(i)), ascii(usedSinceMs[i])});
        Withdrawal[] out = new Withdrawal[r.length];
        for (int i = 0; i < r.length; i++) {
            if (r[i] instanceof Long code && code >= 0) {
                out[i] = withdrawal(code);
            } else {
                LOG.warn("cannot withdraw {}: {}", offers.get(i), r[i]);
            }
        }
        return out;
    }

    @Override
    public void withdraw(Offer offer) {
        script(RedisScripts.WITHDRAW, ScriptOutputType.INTEGER, OfferCodec.hashKey(prefix, offer.key()),
                OfferCodec.identity(offer));
    }

    @Override
    public boolean renew(Offer offer, long leaseExpiryMs) {
        return (long) script(RedisScripts.RENEW, ScriptOutputType.INTEGER, OfferCodec.hashKey(prefix, offer.key()),
                OfferCodec.identity(offer), OfferCodec.lease(leaseExpiryMs), ascii(gcTtl(leaseExpiryMs))) == 1;
    }

    /** Stops the heartbeat (this process's offers stop being served within the owner TTL) and disconnects. */
    @Override
    public void close() {
        heartbeat.shutdownNow();
        connection.close();
        client.shutdown(Duration.ZERO, Duration.ofSeconds(2));
    }

    // ---- liveness

    /**
     * This process is alive once its key is; another owner while its key exists, as read at most
     * {@value #LIVENESS_CACHE_MS} ms ago unless {@code fresh}.
     */
    private boolean ownerAlive(Offer o, boolean fresh) {
        String key = OfferCodec.ownerKey(prefix, o.nodeId(), o.owner());
        if (o.owner().equals(ProcessIdentity.current()) && ownKeys.containsKey(key)) {
            return true;
        }
        long now = System.nanoTime();
        long[] cached = liveness.get(key);
        if (!fresh && cached != null && now - cached[0] < TimeUnit.MILLISECONDS.toNanos(LIVENESS_CACHE_MS)) {
            return cached[1] != 0;
        }
        boolean alive = call(() -> commands().exists(key)) > 0;
        if (liveness.size() >= LIVENESS_CACHE_LIMIT) {
            liveness.values().removeIf(v -> now - v[0] >= TimeUnit.MILLISECONDS.toNanos(LIVENESS_CACHE_MS));
        }
        liveness.put(key, new long[] {now, alive ? 1 : 0});
        return alive;
    }

    private void beat() {
        for (String owner : ownKeys.keySet()) {
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

    private Offer decode(ChunkKey key, byte[] record) {
        try {
            return OfferCodec.decodeRecord(key, record);
        } catch (IllegalArgumentException foreign) {
            LOG.warn("skipping a value under {} that is not an offer: {}", OfferCodec.hashKey(prefix, key),
                    foreign.getMessage());
            return null;
        }
    }

    private long gcTtl(long leaseExpiryMs) {
        long now = clockMillis();
        long left = leaseExpiryMs <= now ? 0 : leaseExpiryMs - now < 0 ? Long.MAX_VALUE : leaseExpiryMs - now;
        return Math.min(left, TimeUnit.DAYS.toMillis(1)) + GC_GRACE_MS;
    }

    private static byte[] ascii(long v) {
        return Long.toString(v).getBytes(StandardCharsets.US_ASCII);
    }

    private static String ascii(byte[] b) {
        return new String(b, StandardCharsets.US_ASCII);
    }

    private RedisClusterCommands<String, byte[]> commands() {
        return sync;
    }

    /** Runs a script, loading it once per Redis server, and again after Redis restarted and forgot it. */
    private <T> T script(String body, ScriptOutputType type, String key, byte[]... args) {
        return script(body, type, new String[] {key}, args);
    }

    /** By its SHA-1; where Redis does not know it (restarted, a new cluster node), it never ran: sent whole. */
    private <T> T script(String body, ScriptOutputType type, String[] keys, byte[]... args) {
        return call(() -> {
            try {
                return commands().<T>evalsha(sha(body), type, keys, args);
            } catch (RedisNoScriptException unknown) {
                return commands().<T>eval(body, type, keys, args);
            }
        });
    }

    /**
     * Each offer's answer to {@code step}, in one round trip: on one Redis, one script per {@value #SCRIPT_WINDOW}
     * keys (a window short enough not to hold Redis from its other clients for long), pipelined; on a Redis Cluster,
     * where a prompt's keys lie in many slots, one script per key, pipelined. Per offer: the step's answer (a Long,
     * -1 where it failed on that key), or the {@link RegistryException} its call failed with.
     *
     * @throws RegistryException when the calls cannot even be sent
     */
    private Object[] eachKey(RedisScripts.KeyScript step, List<Offer> offers, byte[][] shared,
                             IntFunction<byte[][]> own) {
        int n = offers.size();
        if (cluster) {
            return pipeline(n, step.one(), ScriptOutputType.INTEGER,
                    i -> new String[] {OfferCodec.hashKey(prefix, offers.get(i).key())}, i -> {
                        byte[][] mine = own.apply(i);
                        byte[][] args = Arrays.copyOf(mine, mine.length + shared.length);
                        System.arraycopy(shared, 0, args, mine.length, shared.length);
                        return args;
                    });
        }
        int windows = (n + SCRIPT_WINDOW - 1) / SCRIPT_WINDOW;
        Object[] answers = pipeline(windows, step.many(), ScriptOutputType.MULTI, w -> IntStream
                .range(w * SCRIPT_WINDOW, Math.min(n, (w + 1) * SCRIPT_WINDOW))
                .mapToObj(i -> OfferCodec.hashKey(prefix, offers.get(i).key())).toArray(String[]::new), w -> {
                    List<byte[]> args = new ArrayList<>(Arrays.asList(shared));
                    for (int i = w * SCRIPT_WINDOW; i < Math.min(n, (w + 1) * SCRIPT_WINDOW); i++) {
                        args.addAll(Arrays.asList(own.apply(i)));
                    }
                    return args.toArray(byte[][]::new);
                });
        Object[] out = new Object[n];
        for (int w = 0; w < windows; w++) {
            int from = w * SCRIPT_WINDOW;
            int to = Math.min(n, from + SCRIPT_WINDOW);
            Object a = answers[w];
            boolean whole = a instanceof List<?> l && l.size() == to - from && l.stream().allMatch(v -> v instanceof Long);
            for (int i = from; i < to; i++) {
                out[i] = whole ? ((List<?>) a).get(i - from) : a instanceof RegistryException e ? e
                        : new RegistryException("Redis answered a batched step with something else: " + a);
            }
        }
        return out;
    }

    /**
     * One script per item, pipelined ({@link #windowed}): item i's value, or the {@link RegistryException} it failed
     * with. A command Redis did not know the script of never ran, so it is sent again, whole ({@code EVAL}).
     *
     * @throws RegistryException when a window cannot even be sent
     */
    private Object[] pipeline(int n, String body, ScriptOutputType type, IntFunction<String[]> keys,
                              IntFunction<byte[][]> args) {
        String sha = sha(body);
        Object[] out = windowed(n, i -> async.evalsha(sha, type, keys.apply(i), args.apply(i)), false);
        int[] unknown = IntStream.range(0, n)
                .filter(i -> out[i] instanceof RegistryException e && restarted(e)).toArray();
        Object[] again = windowed(unknown.length,
                k -> async.eval(body, type, keys.apply(unknown[k]), args.apply(unknown[k])), false);
        for (int k = 0; k < unknown.length; k++) {
            out[unknown[k]] = again[k];
        }
        return out;
    }

    /**
     * One command per item, sent a window of {@value #PIPELINE_WINDOW} at a time, each window awaited within the
     * command timeout of its own: item i's value, or the {@link RegistryException} it failed with. With
     * {@code reads}, an item Redis did not answer (down, slow) ends the batch: the later items fail with it, unsent.
     *
     * @throws RegistryException when a window cannot even be sent
     */
    private Object[] windowed(int n, IntFunction<RedisFuture<?>> send, boolean reads) {
        Object[] out = new Object[n];
        for (int from = 0; from < n; from += PIPELINE_WINDOW) {
            int first = from;
            int to = Math.min(n, from + PIPELINE_WINDOW);
            List<RedisFuture<?>> sent = call(() -> {
                List<RedisFuture<?>> fs = new ArrayList<>(to - first);
                for (int i = first; i < to; i++) {
                    fs.add(send.apply(i));
                }
                return fs;
            });
            long deadline = deadline();
            for (int i = from; i < to; i++) {
                out[i] = settled(sent.get(i - from), deadline);
            }
            for (int i = from; reads && i < to; i++) {
                if (out[i] instanceof RegistryException e && !answered(e)) {
                    Arrays.fill(out, to, n, e); // a lookup fails whole: the later windows would only wait too
                    return out;
                }
            }
        }
        return out;
    }

    /** When a call sent now is given up: one command timeout from now. */
    private long deadline() {
        return System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMs);
    }

    /**
     * The future's value by {@code deadline} (of {@link #deadline}), or the RegistryException it failed with: futures
     * sent together share one deadline, so a node that answers none of them costs one timeout, not one each.
     */
    private Object settled(RedisFuture<?> f, long deadline) {
        try {
            return call(() -> f.get(Math.max(0, deadline - System.nanoTime()), TimeUnit.NANOSECONDS));
        } catch (RegistryException e) {
            return e;
        }
    }

    /**
     * Whether Redis itself answered with the error: a moved slot or a refused script, which another way of reading
     * may get past; not a node down, unreachable or slow.
     */
    private static boolean answered(RegistryException e) {
        return causedBy(e, c -> c instanceof RedisCommandExecutionException);
    }

    /** The script's SHA-1, computed here: EVALSHA needs no SCRIPT LOAD, which a cluster would send to every node. */
    private String sha(String body) {
        return shas.computeIfAbsent(body, b -> {
            try {
                return java.util.HexFormat.of().formatHex(java.security.MessageDigest.getInstance("SHA-1")
                        .digest(b.getBytes(StandardCharsets.UTF_8)));
            } catch (java.security.NoSuchAlgorithmException e) {
                throw new IllegalStateException("SHA-1 is missing from this JVM", e);
            }
        });
    }

    private static boolean restarted(RegistryException e) {
        return causedBy(e, c -> c instanceof RedisNoScriptException);
    }

    /** Whether {@code e} or one of its causes is what {@code what} looks for. */
    private static boolean causedBy(RegistryException e, Predicate<Throwable> what) {
        for (Throwable c = e; c != null; c = c.getCause()) {
            if (what.test(c)) {
                return true;
            }
        }
        return false;
    }

    private interface RedisCall<T> {
        T run() throws Exception;
    }

    /** Every failure of Redis (down, slow, refused, closed) is the registry's, which the marketplace turns into a miss. */
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
