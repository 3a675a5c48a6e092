package io.kvmarket.redis;

import java.util.ArrayList;
import java.util.List;

/**
 * The registry's scripts. Each write is a step on one chunk's hash (one Cluster slot), run atomically by a script
 * of one key or, on one Redis server, of many keys ({@link KeyScript}): it acts only on the exact publication it names (field {@code o}, compared byte for byte), and a withdrawal reads the pins
 * in the same step that deletes. A key under the prefix that is not a hash is foreign: reads stop at it, a
 * publication replaces it. Times are the registry's clock, passed in as decimal strings and compared exactly (Lua
 * numbers are doubles, which cannot tell {@code Long.MAX_VALUE} from its neighbours).
 */
final class RedisScripts {

    private RedisScripts() {
    }

    /** Exact comparison of two decimal integers written by Long.toString: -1, 0 or 1. */
    private static final String CMP = """
            local function cmp(a, b)
              local na, nb = a:sub(1, 1) == '-', b:sub(1, 1) == '-'
              if na ~= nb then return na and -1 or 1 end
              local x, y = a, b
              if na then x, y = b:sub(2), a:sub(2) end
              if #x ~= #y then return #x < #y and -1 or 1 end
              if x == y then return 0 end
              return x < y and -1 or 1
            end
            """;

    /**
     * A chunk's pin fields as the scripts wrote them, or no pin: {@code count(v)} of the pin count, {@code time(v)}
     * of a time field. Fields some other writer damaged read as none, so a damaged field neither fails every step on
     * its chunk (the chunk then could be neither pinned nor withdrawn for as long as its owner renews it) nor holds it.
     * {@code read(k, ...)} is one HMGET of the fields named, or nil when the key holds something foreign.
     */
    private static final String PIN_FIELDS = """
            local function count(v)
              local n = tonumber(v or '0')
              if not n or n < 0 or n ~= math.floor(n) or n > 1e15 then return 0 end
              return n
            end
            local function time(v)
              if v and (v == '0' or #v <= 20 and string.match(v, '^%-?[1-9]%d*$')) then return v end
              return '0'
            end
            local function read(k, ...)
              local v = redis.pcall('HMGET', k, ...)
              if v.err then return nil end
              return v
            end
            """;

    /** The current identity of KEYS[1]: '' when there is none, '!' when the key holds something foreign. */
    private static final String CURRENT = """
            local function current(k)
              local t = redis.call('TYPE', k).ok
              if t == 'none' then return '' end
              if t ~= 'hash' then return '!' end
              return redis.call('HGET', k, 'o') or ''
            end
            """;

    /**
     * KEYS: the chunks of a prompt, in order. Returns identity and lease of each, up to the first chunk with none,
     * then '!' if that chunk's key holds something foreign: a whole longest-prefix lookup in one command. Reads
     * keys of many slots, so one Redis server only.
     */
    static final String LOOKUP = """
            local out = {}
            for i = 1, #KEYS do
              local v = redis.pcall('HMGET', KEYS[i], 'o', 'l')
              if v.err then out[#out + 1] = '!' break end
              if not v[1] then break end
              out[#out + 1] = v[1]
              out[#out + 1] = v[2] or ''
            end
            return out
            """;

    /**
     * ARGV: chunks one node of a Redis Cluster serves, of any slots. Redis 7 lets a script so flagged read keys of
     * several slots of its node, but checks declared KEYS for one slot, so the keys come as arguments. Returns
     * identity and lease per key, in order: '' and '' when none, '!' and '' when foreign (another type); any other
     * error, such as a key of a slot that moved to another node, fails the whole call.
     */
    static final String READ_ON_NODE = """
            #!lua flags=no-writes,allow-cross-slot-keys
            local out = {}
            for i = 1, #ARGV do
              local v = redis.pcall('HMGET', ARGV[i], 'o', 'l')
              if v.err then
                if string.sub(v.err, 1, 9) ~= 'WRONGTYPE' then
                  return redis.error_reply(v.err) -- not this node's key (its slot moved): the call fails
                end
                out[#out + 1] = '!'
                out[#out + 1] = ''
              else
                out[#out + 1] = v[1] or ''
                out[#out + 1] = v[2] or ''
              end
            end
            return out
            """;

    /** KEYS[1]: one chunk. Returns {identity, lease} of its offer, {} when none, {'!'} when foreign. */
    static final String READ = """
            local t = redis.call('TYPE', KEYS[1]).ok
            if t == 'none' then return {} end
            if t ~= 'hash' then return {'!'} end
            local v = redis.call('HMGET', KEYS[1], 'o', 'l')
            if not v[1] then return {} end
            return {v[1], v[2] or ''}
            """;

    /** ARGV: expected current identity ('' none, '!' foreign), new identity, lease, GC ttl ms. 1 when published. */
    static final String PUBLISH = CURRENT + """
            if current(KEYS[1]) ~= ARGV[1] then return 0 end
            redis.call('DEL', KEYS[1])
            redis.call('HSET', KEYS[1], 'o', ARGV[2], 'l', ARGV[3], 'pc', 0, 'pe', 0, 'lp', 0)
            redis.call('PEXPIRE', KEYS[1], ARGV[4])
            return 1
            """;

    /**
     * A step on one chunk's hash, written once as the Lua function {@code name(k, own..., shared...)} answering an
     * integer. {@link #one} runs it on KEYS[1], ARGV being the function's arguments in order. {@link #many} runs it on
     * every key of KEYS (one Redis server: any slots), ARGV holding the arguments all keys share first, then each
     * key's own; it answers one integer per key, -1 where that key's step failed, so that one damaged key leaves the
     * other keys' answers as separate calls would.
     */
    record KeyScript(String one, String many) {

        static KeyScript of(String prelude, String function, String name, int own, int shared) {
            List<String> ownArgs = new ArrayList<>();
            List<String> sharedArgs = new ArrayList<>();
            List<String> oneArgs = new ArrayList<>();
            for (int j = 1; j <= own; j++) {
                ownArgs.add("ARGV[" + shared + " + (i - 1) * " + own + " + " + j + "]");
                oneArgs.add("ARGV[" + j + "]");
            }
            for (int j = 1; j <= shared; j++) {
                sharedArgs.add("ARGV[" + j + "]");
                oneArgs.add("ARGV[" + (own + j) + "]");
            }
            List<String> manyArgs = new ArrayList<>(List.of("KEYS[i]"));
            manyArgs.addAll(ownArgs);
            manyArgs.addAll(sharedArgs);
            String one = prelude + function + "return " + name + "(KEYS[1], " + String.join(", ", oneArgs) + ")\n";
            String many = prelude + function + """
                    local out = {}
                    for i = 1, #KEYS do
                      local ok, r = pcall(%s, %s)
                      out[i] = ok and r or -1
                    end
                    return out
                    """.formatted(name, String.join(", ", manyArgs));
            return new KeyScript(one, many);
        }
    }

    /** Own: identity; shared: pin expiry, now. 1 when pinned. */
    static final KeyScript PIN = KeyScript.of(CMP + PIN_FIELDS, """
            local function pin(k, id, expiry, now)
              local v = read(k, 'o', 'pc', 'pe', 'lp')
              if not v or v[1] ~= id then return 0 end
              local set = {'pc', string.format('%d', count(v[2]) + 1)}
              if cmp(time(v[3]), expiry) < 0 then set[#set + 1] = 'pe' set[#set + 1] = expiry end
              if cmp(time(v[4]), now) < 0 then set[#set + 1] = 'lp' set[#set + 1] = now end
              redis.call('HSET', k, unpack(set))
              return 1
            end
            """, "pin", 1, 2);

    /** Own: identity. 1 when it was the current offer. */
    static final KeyScript UNPIN = KeyScript.of(PIN_FIELDS, """
            local function unpin(k, id)
              local v = read(k, 'o', 'pc')
              if not v or v[1] ~= id then return 0 end
              local n = count(v[2])
              if n > 0 then redis.call('HSET', k, 'pc', string.format('%d', n - 1)) end
              return 1
            end
            """, "unpin", 1, 0);

    /** Own: identity. 1 when it is the current offer. */
    static final KeyScript CHECK = KeyScript.of(PIN_FIELDS, """
            local function check(k, id)
              local v = read(k, 'o')
              if v and v[1] == id then return 1 end
              return 0
            end
            """, "check", 1, 0);

    /** Own: identity, used since; shared: now. 0 withdrawn (or gone), 1 pinned, 2 imported since. */
    static final KeyScript WITHDRAW_IF_UNUSED = KeyScript.of(CMP + PIN_FIELDS, """
            local function withdraw(k, id, usedSince, now)
              local v = read(k, 'o', 'pc', 'pe', 'lp')
              if not v or v[1] ~= id then return 0 end
              if count(v[2]) > 0 and cmp(time(v[3]), now) > 0 then return 1 end
              if cmp(time(v[4]), usedSince) > 0 then return 2 end
              redis.call('DEL', k)
              return 0
            end
            """, "withdraw", 2, 1);

    /** ARGV: identity. */
    static final String WITHDRAW = CURRENT + """
            if current(KEYS[1]) ~= ARGV[1] then return 0 end
            redis.call('DEL', KEYS[1])
            return 1
            """;

    /** ARGV: identity, lease, GC ttl ms. 1 when renewed. */
    static final String RENEW = CURRENT + """
            if current(KEYS[1]) ~= ARGV[1] then return 0 end
            redis.call('HSET', KEYS[1], 'l', ARGV[2])
            redis.call('PEXPIRE', KEYS[1], ARGV[3])
            return 1
            """;
}
