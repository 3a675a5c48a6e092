package io.kvmarket.transfer;

/** How close the memory an offer names is to the importer; transports are tried closest first. */
public enum Locality {
    /** This process's own memory (an engine importing from its own pool). */
    SAME_PROCESS,
    /** Another process, or another GPU, of this node. */
    SAME_NODE,
    /** Another node. */
    OTHER_NODE
}
