package io.kvmarket;

import java.util.EnumMap;
import java.util.Map;
import java.util.concurrent.atomic.LongAdder;

/** Counters of one marketplace instance. Cheap to update from any thread; {@link #snapshot()} reads them. */
public final class MarketplaceMetrics {

    final LongAdder matches = new LongAdder();
    final LongAdder loads = new LongAdder();
    final LongAdder tokensImported = new LongAdder();
    final LongAdder bytesImported = new LongAdder();
    final LongAdder chunksExported = new LongAdder();
    final LongAdder chunksAlreadyOffered = new LongAdder();
    final LongAdder chunksExportSkipped = new LongAdder();
    private final EnumMap<MissReason, LongAdder> misses = new EnumMap<>(MissReason.class);

    MarketplaceMetrics() {
        for (MissReason r : MissReason.values()) {
            misses.put(r, new LongAdder());
        }
    }

    void miss(MissReason reason) {
        misses.get(reason).increment();
    }

    public Snapshot snapshot() {
        EnumMap<MissReason, Long> m = new EnumMap<>(MissReason.class);
        misses.forEach((r, a) -> {
            if (r != MissReason.NONE && a.sum() > 0) {
                m.put(r, a.sum());
            }
        });
        return new Snapshot(matches.sum(), loads.sum(), tokensImported.sum(), bytesImported.sum(),
                chunksExported.sum(), chunksAlreadyOffered.sum(), chunksExportSkipped.sum(), Map.copyOf(m));
    }

    /** Counter values at one moment. {@code missesByReason} counts loads and matches that stopped short. */
    public record Snapshot(long matches, long loads, long tokensImported, long bytesImported, long chunksExported,
                           long chunksAlreadyOffered, long chunksExportSkipped, Map<MissReason, Long> missesByReason) {
    }
}
