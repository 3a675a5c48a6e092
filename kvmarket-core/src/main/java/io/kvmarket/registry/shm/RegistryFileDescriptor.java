package io.kvmarket.registry.shm;

import io.kvmarket.registry.Offer;

/**
 * Layout of the node-local registry file, version 5: a fixed header and an open-addressing hash table of
 * fixed-size slots, all little-endian, shared by memory mapping between every process of one user on the node.
 *
 * <pre>
 * Header (128 bytes)
 *   0  +---------------------------------------------------------------+
 *      | magic "KVMREG05" (8)                                          |
 *   8  | version (4)                   | slot bytes (4)                |
 *  16  | capacity: slots, a power of two (8)                           |
 *  24  | live slots (8)                 maintained under the file lock |
 *  32  | tombstone slots (8)            maintained under the file lock |
 *  40  | dirty slot: index being written, -1 when none (8)             |
 *  48  | rebuilding: 1 while a writer rewrites the whole table (8)     |
 *  56  | reserved up to 128                                            |
 * 128  +---------------------------------------------------------------+
 *      | slot 0 | slot 1 | ... | slot capacity-1                       |
 *
 * Slot (512 bytes)
 *   0  | seq (8): even = stable, odd = a writer is changing the slot   |
 *   8  | state (8): 0 empty, 1 live, 2 tombstone                       |
 *  16  | key hi (8)                    | 24 key lo (8)                 |
 *  32  | owner pid (8)                 | 40 owner start time (8)       |
 *  48  | node id (8)                   | 56 generation (8)             |
 *  64  | lease expiry ms (8)           | 72 chunk offset (8)           |
 *  80  | chunk length (8)              | 88 layout fingerprint (8)     |
 *  96  | pin count (8)      CAS by importers without the lock          |
 * 104  | pin expiry ms (8)  CAS-max by importers without the lock      |
 * 112  | last pin ms (8)    CAS-max by importers without the lock      |
 * 120  | endpoints length (8)                                          |
 * 128  | endpoints (384): per endpoint kind (1), length (2), bytes,    |
 *      | as {@link io.kvmarket.registry.Endpoint#encode} writes them   |
 * 512  +---------------------------------------------------------------+
 * </pre>
 *
 * Version 4 replaced v3's single 128-byte device handle by a list of tagged endpoints, one per transport that
 * reaches the chunk, so the slot doubled. Version 5 added the rebuilding flag: a writer killed while it rewrote the
 * table left probe sequences cut by the slots it had emptied, and an offer hidden behind such a cut could be
 * published again beside itself, so the next writer rewrites the table again first. Each version has a file name
 * of its own ({@code registry-v5.kvreg}): processes of older versions keep their own registry. Writers (publish,
 * withdraw, renew, sweep) take an fcntl lock on the file, which the kernel drops when its holder dies, and record
 * the slot they change in "dirty slot" first: the next writer turns a slot left half-written by a killed process
 * into a tombstone. Readers take no lock: a slot is read between two equal, even reads of its seq, and a key is
 * always compared inside that consistent read.
 */
final class RegistryFileDescriptor {

    static final long MAGIC = 0x35304745524d564bL; // "KVMREG05" little-endian
    static final int VERSION = 5;

    static final int HEADER_BYTES = 128;
    /** 2^21 slots of 512 bytes: the file stays under 2 GiB, one mapping. */
    static final long MAX_CAPACITY = 1L << 21;
    static final int MAGIC_OFFSET = 0;
    static final int VERSION_OFFSET = 8;
    static final int SLOT_BYTES_OFFSET = 12;
    static final int CAPACITY_OFFSET = 16;
    static final int LIVE_OFFSET = 24;
    static final int TOMBSTONES_OFFSET = 32;
    static final int DIRTY_SLOT_OFFSET = 40;
    static final int REBUILDING_OFFSET = 48;

    static final int SLOT_BYTES = 512;
    static final int SEQ = 0;
    static final int STATE = 8;
    static final int KEY_HI = 16;
    static final int KEY_LO = 24;
    static final int OWNER_PID = 32;
    static final int OWNER_START = 40;
    static final int NODE_ID = 48;
    static final int GENERATION = 56;
    static final int LEASE_EXPIRY = 64;
    static final int CHUNK_OFFSET = 72;
    static final int CHUNK_LENGTH = 80;
    static final int LAYOUT_FINGERPRINT = 88;
    static final int PIN_COUNT = 96;
    static final int PIN_EXPIRY = 104;
    static final int LAST_PIN = 112;
    static final int ENDPOINTS_LENGTH = 120;
    static final int ENDPOINTS = 128;
    /** Every offer's encoded endpoints fit their slot. */
    static final int ENDPOINTS_CAPACITY = Offer.MAX_ENDPOINT_BYTES;

    static final long STATE_EMPTY = 0;
    static final long STATE_LIVE = 1;
    static final long STATE_TOMBSTONE = 2;

    private RegistryFileDescriptor() {
    }

    static long fileBytes(long capacity) {
        return HEADER_BYTES + capacity * SLOT_BYTES;
    }

    static int slotOffset(long slot) {
        return (int) (HEADER_BYTES + slot * SLOT_BYTES);
    }
}
