package io.kvmarket.examples.model;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

class ByteTokenizerTest {

    @Test
    void tokensAreTheUtf8Bytes() {
        assertArrayEquals(new int[] {'H', 0xc3, 0xa9, '\n'}, ByteTokenizer.encode("H\u00e9\n"));
        assertEquals("H\u00e9\n", ByteTokenizer.decode(new int[] {'H', 0xc3, 0xa9, '\n'}));
    }

    @Test
    void invalidUtf8DecodesToReplacementCharacters() {
        assertEquals("a\ufffd", ByteTokenizer.decode(new int[] {'a', 0xff}));
    }
}
