package io.kvmarket.examples.demo;

import io.kvmarket.examples.demo.Workload.Outcome;
import io.kvmarket.examples.model.ByteTokenizer;
import io.kvmarket.examples.server.GenerationResult;
import org.junit.jupiter.api.Test;

import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;

class SummaryTest {

    private static Outcome outcome(String id, int imported, double ttftMs, List<Integer> output) {
        return new Outcome(id, "A",
                new GenerationResult(1000, imported, ttftMs, output, imported > 0 ? "device-ipc" : ""));
    }

    @Test
    void meansCoverOnlyRequestsThatImported() {
        List<Outcome> on = List.of(outcome("q1", 0, 900, List.of(1, 2)), outcome("q2", 768, 30, List.of(3)),
                outcome("q3", 512, 50, List.of(4)), outcome("q4", 0, 1000, List.of(5)));
        List<Outcome> off = List.of(outcome("q1", 0, 950, List.of(1, 2)), outcome("q2", 0, 1000, List.of(3)),
                outcome("q3", 0, 1000, List.of(4)), outcome("q4", 0, 990, List.of(5)));
        assertEquals("summary: requests=4 hit_rate=0.500 tokens_imported=1280 ttft_on_ms=40.0 ttft_off_ms=1000.0"
                + " ratio=0.0400 identical_outputs=true", Summary.of(on, off).line());
    }

    @Test
    void oneDifferentTokenMakesOutputsDiffer() {
        List<Outcome> on = List.of(outcome("q1", 256, 10, List.of(1, 2)));
        List<Outcome> off = List.of(outcome("q1", 0, 100, List.of(1, 3)));
        assertEquals(false, Summary.of(on, off).identicalOutputs());
    }
}
