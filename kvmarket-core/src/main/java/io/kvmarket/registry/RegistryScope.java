package io.kvmarket.registry;

/** Which processes share a registry's offers. */
public enum RegistryScope {
    /** The marketplaces of one JVM that are handed the same instance. */
    PROCESS,
    /** Every process of one user on the node. */
    NODE,
    /** Every member of a cluster of nodes. */
    CLUSTER
}
