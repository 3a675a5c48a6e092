package io.kvmarket.benchmarks;

import org.openjdk.jmh.results.BenchmarkResult;
import org.openjdk.jmh.results.IterationResult;
import org.openjdk.jmh.results.Result;
import org.openjdk.jmh.results.RunResult;
import org.openjdk.jmh.runner.Runner;
import org.openjdk.jmh.runner.options.ChainedOptionsBuilder;
import org.openjdk.jmh.runner.options.OptionsBuilder;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.regex.Pattern;

/**
 * Runs the benchmarks through the JMH Runner API (iteration counts from each class's annotations, sized for a
 * 2-core machine) and prints one summary line per target, each with the baseline measured in the same run and
 * the ratio. Ratios of times are measured / baseline (how many times the baseline's cost); the ratio of
 * bandwidths is measured / baseline (the fraction of a plain copy reached). GB/s are 10^9 bytes per second.
 * Scores are JMH's (mean of the measurement iterations +- its 99.9% error); {@code median_ratio} is the same
 * ratio over the median iterations, which a burst of other work on a shared machine moves less.
 *
 * <p>Arguments pick groups: {@code hashing}, {@code lookup}, {@code import}, {@code prefill}, {@code redis} (needs
 * redis-server installed); none runs all five.
 */
public final class BenchmarkMain {

    private static final Map<String, Class<?>> GROUPS = Map.of(
            "hashing", KeyHashingBenchmark.class,
            "lookup", PrefixLookupBenchmark.class,
            "import", HostImportBenchmark.class,
            "prefill", PrefillSkipBenchmark.class,
            "redis", RedisLookupBenchmark.class);
    private static final List<String> ORDER = List.of("hashing", "lookup", "import", "prefill", "redis");

    private BenchmarkMain() {
    }

    public static void main(String[] args) throws Exception {
        Set<String> groups = new LinkedHashSet<>(args.length == 0 ? ORDER : List.of(args));
        for (String g : groups) {
            if (!GROUPS.containsKey(g)) {
                throw new IllegalArgumentException("unknown benchmark group " + g + "; known: " + ORDER);
            }
        }
        Path report = Files.createTempFile("kvmarket-bench-", ".report");
        String loadBefore = loadAverage();
        try {
            ChainedOptionsBuilder options = new OptionsBuilder()
                    .shouldFailOnError(false)
                    .jvmArgsAppend("-D" + Workloads.REPORT_PROPERTY + "=" + report,
                            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn");
            for (String g : ORDER) {
                if (groups.contains(g)) {
                    options.include("^" + Pattern.quote(GROUPS.get(g).getName() + ".") + ".*");
                }
            }
            Collection<RunResult> results = new Runner(options.build()).run();
            Map<String, Score> scores = new HashMap<>();
            for (RunResult r : results) {
                String name = r.getParams().getBenchmark();
                String method = name.substring(name.lastIndexOf('.') + 1);
                String param = r.getParams().getParam("memory") != null ? r.getParams().getParam("memory")
                        : r.getParams().getParam("chunks");
                scores.put(param == null ? method : method + ":" + param, Score.of(r));
            }
            String reported = Files.readString(report, StandardCharsets.UTF_8);
            System.out.println();
            System.out.println("KV Marketplace benchmarks (" + Runtime.getRuntime().availableProcessors() + " cores, "
                    + System.getProperty("java.vm.name") + " " + System.getProperty("java.version")
                    + ", load average before " + loadBefore + ", after " + loadAverage() + ")");
            for (String g : ORDER) {
                if (groups.contains(g)) {
                    summarize(g, scores, reported).forEach(System.out::println);
                }
            }
        } finally {
            Files.deleteIfExists(report);
        }
    }

    private static List<String> summarize(String group, Map<String, Score> s, String reported) {
        switch (group) {
            case "hashing": {
                Score chain = s.get("sha256Chain");
                Score base = s.get("baselinePlainSha256");
                if (chain == null || base == null) {
                    return List.of("hashing: FAILED (no result; see the JMH output above)");
                }
                return List.of(String.format(Locale.ROOT,
                        "hashing: sha256_chain_ns_per_token=%s baseline_plain_sha256_ns_per_token=%s ratio=%.2f"
                                + " median_ratio=%.2f target=<=3ns/token met=%b",
                        chain.text(2), base.text(2), chain.mean / base.mean, chain.median / base.median,
                        chain.mean <= 3.0));
            }
            case "lookup": {
                Score base = s.get("baselineHashMap");
                if (base == null) {
                    return List.of("lookup: FAILED (no baseline result; see the JMH output above)");
                }
                return List.of(lookupLine("lookup_in_process", s.get("inProcess"), base, 20),
                        lookupLine("lookup_node_local", s.get("nodeLocal"), base, 50));
            }
            case "redis": {
                return List.of(redisLine(s.get("lookup:32"), s.get("baselinePing:32"), 32),
                        redisLine(s.get("lookup:512"), s.get("baselinePing:512"), 512),
                        importRoundLine(s.get("importRound:32"), s.get("baselinePing:32"), 32),
                        importRoundLine(s.get("importRound:512"), s.get("baselinePing:512"), 512));
            }
            case "prefill": {
                Score skip = s.get("importThenPrefill");
                Score full = s.get("baselineFullPrefill");
                String identical = reportedFlag(reported, PrefillSkipBenchmark.IDENTICAL_KEY);
                if (skip == null || full == null) {
                    return List.of("prefill_skip: FAILED (no result; see the JMH output above) identical_logits="
                            + identical);
                }
                return List.of(String.format(Locale.ROOT,
                        "prefill_skip: prefix_tokens=%d suffix_tokens=%d import_then_prefill_ms=%s"
                                + " baseline_full_prefill_ms=%s ratio=%.3f median_ratio=%.3f identical_logits=%s",
                        PrefillSkipBenchmark.PREFIX_TOKENS, PrefillSkipBenchmark.SUFFIX_TOKENS, skip.text(1),
                        full.text(1), skip.mean / full.mean, skip.median / full.median, identical));
            }
            default: {
                Score imp = s.get("marketplaceImport");
                Score direct = s.get("baselineBulkCopy:direct");
                Score shm = s.get("baselineBulkCopy:shm");
                String exact = reportedFlag(reported, HostImportBenchmark.BITEXACT_KEY);
                if (imp == null || direct == null || shm == null) {
                    return List.of("import: FAILED (no result; see the JMH output above) bitexact=" + exact);
                }
                double ratio = direct.mean / imp.mean;
                return List.of(String.format(Locale.ROOT,
                        "import: host_ipc_import_gbps=%.2f baseline_bulk_copy_direct_gbps=%.2f ratio=%.2f"
                                + " median_ratio=%.2f target=>=0.7 met=%b baseline_bulk_copy_shm_gbps=%.2f"
                                + " ratio_vs_shm=%.2f import_ms=%s baseline_direct_ms=%s bitexact=%s",
                        gbps(imp.mean), gbps(direct.mean), ratio, direct.median / imp.median, ratio >= 0.7,
                        gbps(shm.mean), shm.mean / imp.mean, imp.text(2), direct.text(2), exact));
            }
        }
    }

    /** A true/false flag a benchmark fork appended to the report file; "unknown" when it wrote none. */
    private static String reportedFlag(String reported, String key) {
        return reported.contains(key + "false") ? "false" : reported.contains(key + "true") ? "true" : "unknown";
    }

    private static String lookupLine(String name, Score r, Score base, double targetUs) {
        if (r == null) {
            return name + ": FAILED (no result; see the JMH output above)";
        }
        return String.format(Locale.ROOT,
                "%s: us_per_lookup=%s baseline_hashmap_us=%s ratio=%.1f median_ratio=%.1f target=<=%.0fus met=%b",
                name, r.text(3), base.text(3), r.mean / base.mean, r.median / base.median, targetUs,
                r.mean <= targetUs);
    }

    /** Lookup of {@code chunks} keys against one PING on the same server: the target is 1 round trip + 100 us. */
    private static String redisLine(Score lookup, Score ping, int chunks) {
        if (lookup == null || ping == null) {
            return "redis_lookup: chunks=" + chunks + " FAILED (no result; is redis-server installed? see above)";
        }
        return String.format(Locale.ROOT,
                "redis_lookup: chunks=%d us_per_lookup=%s baseline_ping_us=%s excess_over_rtt_us=%.1f"
                        + " median_excess_us=%.1f target=<=1RTT+100us met=%b",
                chunks, lookup.text(1), ping.text(1), lookup.mean - ping.mean, lookup.median - ping.median,
                lookup.mean - ping.mean <= 100);
    }

    /** An import's registry calls (lookup, pins, check, unpins) of {@code chunks} keys, in PING round trips. */
    private static String importRoundLine(Score round, Score ping, int chunks) {
        if (round == null || ping == null) {
            return "redis_import_round: chunks=" + chunks + " FAILED (no result; see above)";
        }
        return String.format(Locale.ROOT,
                "redis_import_round: chunks=%d us_per_round=%s baseline_ping_us=%s round_trips=%.1f"
                        + " median_round_trips=%.1f", chunks, round.text(1), ping.text(1), round.mean / ping.mean,
                round.median / ping.median);
    }

    /** The 1-minute load average, so a reader sees whether other work shared the cores; "n/a" off Linux. */
    private static String loadAverage() {
        try {
            return Files.readString(Path.of("/proc/loadavg"), StandardCharsets.US_ASCII).split(" ")[0];
        } catch (IOException | RuntimeException e) {
            return "n/a";
        }
    }

    /** Milliseconds per 256 MiB to GB/s. */
    private static double gbps(double msPerInvocation) {
        return ImportScenario.KV_BYTES / (msPerInvocation * 1e-3) / 1e9;
    }

    /** JMH's score (mean of the measurement iterations, 99.9% error) and the median iteration. */
    private record Score(double mean, double error, double median) {

        static Score of(RunResult r) {
            List<Double> iterations = new ArrayList<>();
            for (BenchmarkResult fork : r.getBenchmarkResults()) {
                for (IterationResult it : fork.getIterationResults()) {
                    iterations.add(it.getPrimaryResult().getScore());
                }
            }
            Collections.sort(iterations);
            int n = iterations.size();
            double median = n == 0 ? Double.NaN
                    : n % 2 == 1 ? iterations.get(n / 2) : (iterations.get(n / 2 - 1) + iterations.get(n / 2)) / 2;
            Result<?> primary = r.getPrimaryResult();
            return new Score(primary.getScore(), primary.getScoreError(), median);
        }

        String text(int decimals) {
            String f = "%." + decimals + "f";
            return String.format(Locale.ROOT, f + "+-" + f, mean, error);
        }
    }
}
