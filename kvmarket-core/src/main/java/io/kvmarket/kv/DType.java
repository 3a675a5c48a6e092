package io.kvmarket.kv;

import io.kvmarket.kv.DType;

/** Element type of the KV cache. Part of the namespace: KV of different dtypes is never interchangeable. */
public enum DType {
    FLOAT32(4),
    FLOAT16(2),
    BFLOAT16(2),
    FP8_E4M3(1);

    private final int bytes;

    DType(int bytes) {
        this.bytes = bytes;
    }

    public int bytes() {
        return bytes;
    }
}
