package io.kvmarket;

import io.kvmarket.transfer.TransferFailure;

/** Why a match or load delivered fewer tokens than the prompt's full chunks. The engine recomputes the rest. */
public enum MissReason {
    /** Nothing was missing: every requested chunk was delivered. */
    NONE,
    /** The prompt has no full chunk (shorter than the chunk size). */
    PROMPT_TOO_SHORT,
    /** No served offer for the next chunk. */
    NO_OFFER,
    /** The registry could not be read or written. */
    REGISTRY_UNAVAILABLE,
    /** The offer's layout fingerprint differs from this engine's layout. */
    LAYOUT_MISMATCH,
    /** The offer's endpoint or span is malformed or does not fit the source memory. */
    MALFORMED_OFFER,
    /** No transport reaches the node or device that holds the chunk. */
    NO_TRANSPORT,
    /** The exporting process or its memory is gone. */
    PEER_GONE,
    /** The offer could not be pinned: withdrawn between lookup and pin. */
    PIN_FAILED,
    /** The copy itself failed. */
    TRANSFER_FAILED,
    /** The source chunk was withdrawn or replaced during the copy (generation check); its bytes are discarded. */
    SOURCE_CHANGED,
    /**
     * The rest of the offered prefix would take longer to move, at its transports' learned throughput, than to
     * prefill, by the engine's {@link PrefillCost}.
     */
    SLOWER_THAN_PREFILL;

    /** The miss a transport's failure is reported as: the one place transfer failures become miss reasons. */
    public static MissReason of(TransferFailure failure) {
        return switch (failure) {
            case UNREACHABLE -> NO_TRANSPORT;
            case SOURCE_GONE -> PEER_GONE;
            case MALFORMED -> MALFORMED_OFFER;
            case FAILED -> TRANSFER_FAILED;
        };
    }
}
