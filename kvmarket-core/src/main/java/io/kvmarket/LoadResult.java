package io.kvmarket;

/**
 * Outcome of {@link KvMarketplace#load}: the first {@code tokensImported} prompt tokens are in the engine's blocks,
 * byte for byte as exported (never a hole); the engine computes everything after them.
 *
 * @param tokensImported tokens delivered, a multiple of the chunk size
 * @param tokensMatched  tokens the match promised
 * @param reason         why fewer than matched were delivered, {@link MissReason#NONE} when all were
 * @param detail         human-readable detail of the reason, empty when none
 * @param transports     names of the transports that delivered the imported tokens, joined by {@code +} in the
 *                       order the import first used them ({@code device-ipc}, {@code tcp}); empty when none did
 */
public record LoadResult(int tokensImported, int tokensMatched, MissReason reason, String detail, String transports) {

    /** A result no transport delivered to. */
    public LoadResult(int tokensImported, int tokensMatched, MissReason reason, String detail) {
        this(tokensImported, tokensMatched, reason, detail, "");
    }

    public boolean isMiss() {
        return tokensImported == 0;
    }
}
