package io.kvmarket.examples.demo;

import io.kvmarket.examples.demo.Workload.Outcome;

import java.util.List;
import java.util.Locale;

/**
 * The demo's verdict over the same requests with the marketplace on and off.
 *
 * @param requests         requests in the workload
 * @param hitRate          fraction of requests that imported at least one token
 * @param tokensImported   prompt tokens imported over all requests
 * @param ttftOnMs         mean TTFT with the marketplace over the requests that imported
 * @param ttftOffMs        mean TTFT without it over the same requests
 * @param identicalOutputs every generated token of every request is the same on and off
 */
record Summary(int requests, double hitRate, long tokensImported, double ttftOnMs, double ttftOffMs,
               boolean identicalOutputs) {

    /** @param on and {@code off}: outcomes of the same workload, request by request */
    static Summary of(List<Outcome> on, List<Outcome> off) {
        if (on.size() != off.size() || on.isEmpty()) {
            throw new IllegalArgumentException("runs differ in length: " + on.size() + " on, " + off.size() + " off");
        }
        int hits = 0;
        long imported = 0;
        double onSum = 0;
        double offSum = 0;
        boolean identical = true;
        for (int i = 0; i < on.size(); i++) {
            Outcome a = on.get(i);
            Outcome b = off.get(i);
            identical &= a.id().equals(b.id()) && a.result().promptTokens() == b.result().promptTokens()
                    && a.result().outputTokens().equals(b.result().outputTokens());
            imported += a.result().importedTokens();
            if (a.result().importedTokens() > 0) {
                hits++;
                onSum += a.result().ttftMs();
                offSum += b.result().ttftMs();
            }
        }
        return new Summary(on.size(), (double) hits / on.size(), imported, hits == 0 ? 0 : onSum / hits,
                hits == 0 ? 0 : offSum / hits, identical);
    }

    /** Ratio of the mean TTFTs, on over off; 1 when nothing was imported. */
    double ratio() {
        return ttftOffMs == 0 ? 1 : ttftOnMs / ttftOffMs;
    }

    String line() {
        return String.format(Locale.ROOT, "summary: requests=%d hit_rate=%.3f tokens_imported=%d ttft_on_ms=%.1f"
                        + " ttft_off_ms=%.1f ratio=%.4f identical_outputs=%s", requests, hitRate, tokensImported,
                ttftOnMs, ttftOffMs, ratio(), identicalOutputs);
    }
}
