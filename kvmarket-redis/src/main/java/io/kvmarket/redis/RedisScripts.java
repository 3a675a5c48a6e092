package io.kvmarket.redis;

/**
 * The registry's writes, each a Lua script on one chunk's hash (one Cluster slot), so each is atomic: a write acts
 * only on the exact publication it names (field {@code o}, compared byte for byte), and a withdrawal reads the pins
 * in the same step that deletes. Times are the registry's clock, passed in; Lua numbers are doubles, exact for
 * millisecond times.
 */
final class RedisScripts {

    private RedisScripts() {
    }

    /**
     * KEYS: the chunks of a prompt, in order. Returns identity and lease of each, up to the first chunk with none:
     * a whole longest-prefix lookup in one command. Only reads; every key must be in one slot on a Redis Cluster.
     */
    static final String LOOKUP = """
            local out = {}
            for i = 1, #KEYS do
              local v = redis.call('HMGET', KEYS[i], 'o', 'l')
              if not v[1] then break end
              out[#out + 1] = v[1]
              out[#out + 1] = v[2] or ''
            end
            return out
            """;

    /** ARGV: expected current identity ("" for none), new identity, lease, GC ttl ms. 1 when published. */
    static final String PUBLISH = """
            local cur = redis.call('HGET', KEYS[1], 'o')
            if (cur or '') ~= ARGV[1] then return 0 end
            redis.call('DEL', KEYS[1])
            redis.call('HSET', KEYS[1], 'o', ARGV[2], 'l', ARGV[3], 'pc', 0, 'pe', 0, 'lp', 0)
            redis.call('PEXPIRE', KEYS[1], ARGV[4])
            return 1
            """;

    /** ARGV: identity, pin expiry, now. 1 when pinned. */
    static final String PIN = """
            if redis.call('HGET', KEYS[1], 'o') ~= ARGV[1] then return 0 end
            redis.call('HINCRBY', KEYS[1], 'pc', 1)
            if tonumber(redis.call('HGET', KEYS[1], 'pe') or '0') < tonumber(ARGV[2]) then
              redis.call('HSET', KEYS[1], 'pe', ARGV[2])
            end
            if tonumber(redis.call('HGET', KEYS[1], 'lp') or '0') < tonumber(ARGV[3]) then
              redis.call('HSET', KEYS[1], 'lp', ARGV[3])
            end
            return 1
            """;

    /** ARGV: identity. */
    static final String UNPIN = """
            if redis.call('HGET', KEYS[1], 'o') ~= ARGV[1] then return 0 end
            if tonumber(redis.call('HGET', KEYS[1], 'pc') or '0') > 0 then
              redis.call('HINCRBY', KEYS[1], 'pc', -1)
            end
            return 1
            """;

    /** ARGV: identity, used since, now. 0 withdrawn (or gone), 1 pinned, 2 imported since. */
    static final String WITHDRAW_IF_UNUSED = """
            if redis.call('HGET', KEYS[1], 'o') ~= ARGV[1] then return 0 end
            local pins = tonumber(redis.call('HGET', KEYS[1], 'pc') or '0')
            if pins > 0 and tonumber(redis.call('HGET', KEYS[1], 'pe') or '0') > tonumber(ARGV[3]) then return 1 end
            if tonumber(redis.call('HGET', KEYS[1], 'lp') or '0') > tonumber(ARGV[2]) then return 2 end
            redis.call('DEL', KEYS[1])
            return 0
            """;

    /** ARGV: identity. */
    static final String WITHDRAW = """
            if redis.call('HGET', KEYS[1], 'o') ~= ARGV[1] then return 0 end
            redis.call('DEL', KEYS[1])
            return 1
            """;

    /** ARGV: identity, lease, GC ttl ms. 1 when renewed. */
    static final String RENEW = """
            if redis.call('HGET', KEYS[1], 'o') ~= ARGV[1] then return 0 end
            redis.call('HSET', KEYS[1], 'l', ARGV[2])
            redis.call('PEXPIRE', KEYS[1], ARGV[3])
            return 1
            """;
}
