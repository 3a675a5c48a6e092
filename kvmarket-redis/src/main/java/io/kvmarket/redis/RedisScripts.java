package io.kvmarket.redis;

import java.util.ArrayList;
import java.util.List;

/**
 * The registry's scripts. Each write is a step on one chunk's record ({@link OfferCodec}: one key, one Cluster slot),
 * run atomically by a script of one key or, on one Redis server, of many keys ({@link KeyScript}): it acts only on
 * the exact publication it names (the identity, compared byte for byte), and a withdrawal reads the pins in the same
 * step that deletes. A key under the prefix that is not a record is foreign: steps leave it, a publication replaces
 * it. Times are the registry's clock, passed in as decimal strings and compared exactly (Lua numbers are doubles,
 * which cannot tell {@code Long.MAX_VALUE} from its neighbours). Lookups run no Lua on one Redis server (an
 * {@code MGET}); on a Redis Cluster, one {@link #READ_ON_NODE} per node.
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
     * {@code read(k)}: the record under k as identity, lease, pins (a number), pin expiry and last pinned; false when
     * k holds nothing, nil when it holds something foreign: another type, or a string whose header is not four
     * decimal longs (an optional '-' and 1 to 19 digits, within the range of a long; pins without a sign, of at most
     * {@value OfferCodec#PIN_DIGITS} digits), which {@code OfferCodec.header} judges alike. One pattern match reads
     * a header; only fields long enough to leave the range are looked at again, and only a header with leading zeros
     * is rewritten as Long.toString writes numbers, the form {@code cmp} compares. {@code text(...)} writes a record
     * back.
     */
    private static final String RECORD = """
            local function inRange(x)
              local neg = x:sub(1, 1) == '-'
              local d = neg and x:sub(2) or x
              return #d < 19 or (#d == 19 and d <= (neg and '9223372036854775808' or '9223372036854775807'))
            end
            local function canon(x)
              local sign, d = string.match(x, '^(%%-?)0*(%%d+)$')
              if d == '0' then return '0' end
              return sign .. d
            end
            local function read(k)
              local v = redis.pcall('GET', k)
              if not v then return false end
              if type(v) ~= 'string' then return nil end
              local l, pc, pe, lp, s = string.match(v, '^(%%-?%%d+),(%%d+),(%%-?%%d+),(%%-?%%d+)();')
              if not s or #pc > %d then return nil end
              if (#l > 18 or #pe > 18 or #lp > 18) and not (inRange(l) and inRange(pe) and inRange(lp)) then
                return nil
              end
              local h = string.sub(v, 1, s)
              if string.find(h, '^%%-?0%%d') or string.find(h, ',%%-?0%%d') then
                l, pe, lp = canon(l), canon(pe), canon(lp) -- another writer's zeros: cmp reads Long.toString's form
              end
              return string.sub(v, s + 1), l, tonumber(pc), pe, lp
            end
            local function text(id, l, pc, pe, lp)
              return l .. ',' .. string.format('%%d', pc) .. ',' .. pe .. ',' .. lp .. ';' .. id
            end
            """.formatted(OfferCodec.PIN_DIGITS);

    /** The current identity of a key: '' when there is none, '!' when the key holds something foreign. */
    private static final String CURRENT = RECORD + """
            local function current(k)
              local id = read(k)
              if id == false then return '' end
              if not id then return '!' end
              return id
            end
            """;

    /**
     * ARGV: chunks one node of a Redis Cluster serves, of any slots. Redis 7 lets a script so flagged read keys of
     * several slots of its node, one key per command (an {@code MGET} across slots is refused even there), and
     * checks declared KEYS for one slot, so the keys come as arguments. Returns each key's value in order, none where
     * the key holds nothing or another type; any other error, such as a key of a slot that moved to another node,
     * fails the whole call.
     */
    static final String READ_ON_NODE = """
            #!lua flags=no-writes,allow-cross-slot-keys
            local out = {}
            for i = 1, #ARGV do
              local v = redis.pcall('GET', ARGV[i])
              if type(v) == 'table' then
                if string.sub(v.err, 1, 9) ~= 'WRONGTYPE' then
                  return redis.error_reply(v.err) -- not this node's key (its slot moved): the call fails
                end
                v = false
              end
              out[i] = v
            end
            return out
            """;

    /** Keys per {@link #READ_ON_NODE} call: a bound on how long one call holds its node from other clients. */
    static final int READ_ON_NODE_KEYS = 1000;

    /**
     * KEYS[1]: one chunk. Its value, as {@code GET} answers it (a value of another type fails the call). A script
     * rather than a {@code GET} so that a Redis holding writes back ({@code CLIENT PAUSE WRITE}) holds a
     * publication's read as it holds its write: a publish that times out then has written nothing.
     */
    static final String READ = """
            return redis.call('GET', KEYS[1])
            """;

    /**
     * ARGV: expected current identity ('' none, '!' foreign), new identity, lease, GC ttl ms. 1 when published,
     * replacing whatever the key held.
     */
    static final String PUBLISH = CURRENT + """
            if current(KEYS[1]) ~= ARGV[1] then return 0 end
            redis.call('SET', KEYS[1], ARGV[3] .. ',0,0,0;' .. ARGV[2], 'PX', ARGV[4])
            return 1
            """;

    /**
     * A step on one chunk's record, written once as the Lua function {@code name(k, own..., shared...)} answering an
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
    static final KeyScript PIN = KeyScript.of(CMP + RECORD, """
            local function pin(k, id, expiry, now)
              local cur, l, pc, pe, lp = read(k)
              if cur ~= id or pc >= %d then return 0 end
              if cmp(pe, expiry) < 0 then pe = expiry end
              if cmp(lp, now) < 0 then lp = now end
              redis.call('SET', k, text(id, l, pc + 1, pe, lp), 'KEEPTTL')
              return 1
            end
            """.formatted(OfferCodec.MAX_PINS), "pin", 1, 2);

    /** Own: identity. 1 when it was the current offer. */
    static final KeyScript UNPIN = KeyScript.of(RECORD, """
            local function unpin(k, id)
              local cur, l, pc, pe, lp = read(k)
              if cur ~= id then return 0 end
              if pc > 0 then
                redis.call('SET', k, text(id, l, pc - 1, pe, lp), 'KEEPTTL')
              end
              return 1
            end
            """, "unpin", 1, 0);

    /** Own: identity. 1 when it is the current offer. */
    static final KeyScript CHECK = KeyScript.of(RECORD, """
            local function check(k, id)
              if read(k) == id then return 1 end
              return 0
            end
            """, "check", 1, 0);

    /** Own: identity, used since; shared: now. 0 withdrawn (or gone), 1 pinned, 2 imported since. */
    static final KeyScript WITHDRAW_IF_UNUSED = KeyScript.of(CMP + RECORD, """
            local function withdraw(k, id, usedSince, now)
              local cur, l, pc, pe, lp = read(k)
              if cur ~= id then return 0 end
              if pc > 0 and cmp(pe, now) > 0 then return 1 end
              if cmp(lp, usedSince) > 0 then return 2 end
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
    static final String RENEW = RECORD + """
            local id, l, pc, pe, lp = read(KEYS[1])
            if id ~= ARGV[1] then return 0 end
            redis.call('SET', KEYS[1], text(id, ARGV[2], pc, pe, lp), 'PX', ARGV[3])
            return 1
            """;
}
