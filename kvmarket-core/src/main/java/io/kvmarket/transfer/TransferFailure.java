package io.kvmarket.transfer;

/**
 * Why a transport could not move a source's chunks: the one taxonomy every transport reports in, which the
 * marketplace turns into the miss reason an import reports.
 */
public enum TransferFailure {
    /** No path from here to the memory the endpoint names (another node, a GPU without peer access). */
    UNREACHABLE,
    /** The exporter or its memory is gone (it died, or freed the pool). */
    SOURCE_GONE,
    /** The endpoint or a segment is malformed or outside the source memory. */
    MALFORMED,
    /** The copy itself failed. */
    FAILED
}
