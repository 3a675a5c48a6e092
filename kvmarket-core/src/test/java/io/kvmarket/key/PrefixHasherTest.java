package io.kvmarket.key;

import io.kvmarket.kv.KvLayout;
import io.kvmarket.kv.DType;
import io.kvmarket.kv.LayoutOrder;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

class PrefixHasherTest {

    static final KvLayout LAYOUT = KvLayout.of(2, 2, 8, DType.FLOAT32, 16, LayoutOrder.LAYER_MAJOR);
    static final Namespace NS = Namespace.of("test-model", "rev1", "utf8-bytes-v1", LAYOUT);

    static int[] range(int n) {
        int[] t = new int[n];
        for (int i = 0; i < n; i++) {
            t[i] = i;
        }
        return t;
    }

    /** Vectors computed independently (Python hashlib over the documented encoding); they pin the format. */
    @Test
    void keysMatchCommittedTestVectors() {
        PrefixHasher h = new PrefixHasher(NS, 32);
        assertEquals("2adf10839054a20b5e6f29ed19340b1a", h.root().toString());
        ChunkKey[] keys = h.keys(range(96), 96);
        assertEquals(3, keys.length);
        assertEquals("6849339ad8c8817dd7b3fe8119810b31", keys[0].toString());
        assertEquals("e55e263b755a0687b0c110a45f06d899", keys[1].toString());
        assertEquals("daecf064e22a8c8f38e93404f925b09d", keys[2].toString());
        assertEquals(0xc40b873f89961c78L, PrefixHasher.layoutFingerprint(LAYOUT));
    }

    @Test
    void tokenIdsAreEncodedAsUnsignedLittleEndian() {
        int[] tokens = new int[32];
        for (int i = 0; i < 32; i++) {
            tokens[i] = (int) (i * 2654435761L);
        }
        assertEquals("66458e8a795fb88b1dcfa1b478081025", new PrefixHasher(NS, 32).keys(tokens, 32)[0].toString());
    }

    @Test
    void onlyFullChunksGetKeys() {
        PrefixHasher h = new PrefixHasher(NS, 32);
        assertEquals(0, h.keys(range(31), 31).length);
        assertEquals(2, h.keys(range(95), 95).length);
        assertArrayEquals(h.keys(range(96), 64), h.keys(range(64), 64));
    }

    @Test
    void keyDependsOnEveryEarlierToken() {
        PrefixHasher h = new PrefixHasher(NS, 32);
        int[] a = range(64);
        int[] b = range(64);
        b[3] = 999;
        ChunkKey[] ka = h.keys(a, 64);
        ChunkKey[] kb = h.keys(b, 64);
        assertNotEquals(ka[0], kb[0]);
        assertNotEquals(ka[1], kb[1], "chunk 1 key must change when chunk 0 changes");
    }

    @Test
    void differentNamespacesNeverMatch() {
        int[] t = range(32);
        ChunkKey base = new PrefixHasher(NS, 32).keys(t, 32)[0];
        Namespace[] others = {
            Namespace.of("other-model", "rev1", "utf8-bytes-v1", LAYOUT),
            Namespace.of("test-model", "rev2", "utf8-bytes-v1", LAYOUT),
            Namespace.of("test-model", "rev1", "other-tokenizer", LAYOUT),
            Namespace.of("test-model", "rev1", "utf8-bytes-v1", KvLayout.of(2, 2, 8, DType.BFLOAT16, 16, LayoutOrder.LAYER_MAJOR)),
            Namespace.of("test-model", "rev1", "utf8-bytes-v1", KvLayout.of(2, 2, 8, DType.FLOAT32, 16, LayoutOrder.BLOCK_MAJOR)),
            Namespace.of("test-model", "rev1", "utf8-bytes-v1", KvLayout.of(3, 2, 8, DType.FLOAT32, 16, LayoutOrder.LAYER_MAJOR)),
            Namespace.of("test-model", "rev1", "utf8-bytes-v1", new KvLayout(2, 2, 8, DType.FLOAT32, 16, LayoutOrder.LAYER_MAJOR, 1, 2)),
            NS.withAdapter("lora-a"),
            NS.withTenantSalt("tenant-b"),
        };
        for (Namespace other : others) {
            assertNotEquals(base, new PrefixHasher(other, 32).keys(t, 32)[0], other.toString());
        }
    }

    @Test
    void fieldBoundariesAreUnambiguous() {
        // "ab"+"c" and "a"+"bc" must not encode alike.
        Namespace x = Namespace.of("ab", "c", "t", LAYOUT);
        Namespace y = Namespace.of("a", "bc", "t", LAYOUT);
        assertNotEquals(new PrefixHasher(x, 32).root(), new PrefixHasher(y, 32).root());
    }

    @Test
    void rejectsChunkSizeOffTheBlockGrid() {
        assertThrows(IllegalArgumentException.class, () -> new PrefixHasher(NS, 24));
        assertThrows(IllegalArgumentException.class, () -> new PrefixHasher(NS, 0));
        assertThrows(IllegalArgumentException.class, () -> new PrefixHasher(NS, 32).keys(range(10), 11));
    }
}
