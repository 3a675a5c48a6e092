package io.kvmarket.registry;

/** What {@link OfferRegistry#publish} did. */
public enum PublishOutcome {
    PUBLISHED,
    /** A live offer for the key already exists; the registry keeps the first one. */
    ALREADY_OFFERED,
    /** The registry has no room left for the key. */
    REGISTRY_FULL
}
