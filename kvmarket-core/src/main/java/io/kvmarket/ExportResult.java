package io.kvmarket;

/**
 * Outcome of {@link KvMarketplace#export}.
 *
 * @param chunksPublished      chunks copied into the pool and offered
 * @param chunksAlreadyOffered chunks skipped because a live offer for them exists
 * @param chunksSkipped        chunks not exported (pool full of pinned chunks, registry full or down)
 * @param skipReason           why chunks were skipped, empty when none were
 */
public record ExportResult(int chunksPublished, int chunksAlreadyOffered, int chunksSkipped, String skipReason) {
}
