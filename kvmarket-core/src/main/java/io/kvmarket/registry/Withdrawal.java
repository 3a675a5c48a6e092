package io.kvmarket.registry;

/** What {@link OfferRegistry#withdrawIfUnused} did. */
public enum Withdrawal {
    /** The publication is gone: withdrawn now, or before. */
    WITHDRAWN,
    /** A live pin kept it: an importer is copying from it. */
    PINNED,
    /** Kept: an importer pinned it after the time the caller gave, so it is still in demand. */
    IMPORTED_SINCE
}
