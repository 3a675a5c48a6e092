package io.kvmarket.examples.demo;

import io.kvmarket.testkit.NetnsCluster;
import io.kvmarket.testkit.RedisServer;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.io.File;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The demo across nodes, stopped by SIGTERM (Ctrl-C is SIGINT, the same path) once its nodes are up, leaves no
 * namespace, bridge, Redis or server behind.
 */
@Timeout(180)
class DemoAcrossNodesSignalTest {

    @Test
    void aSignalledDemoLeavesNoNamespacesOrProcessesBehind() throws Exception {
        Assumptions.assumeTrue(NetnsCluster.unavailabilityCause().isEmpty(), "needs root and iproute2");
        Assumptions.assumeTrue(RedisServer.installed(), "needs redis-server");
        String java = System.getProperty("java.home") + File.separator + "bin" + File.separator + "java";
        Process demo = new ProcessBuilder(java, "-cp", System.getProperty("java.class.path"),
                DemoMain.class.getName(), "--across-nodes").redirectErrorStream(true)
                .redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
        String prefix = "k" + (demo.pid() % 100_000) + "c";
        List<ProcessHandle> descendants = new ArrayList<>();
        try {
            long until = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (System.nanoTime() < until && demo.descendants().filter(p -> p.info().command().orElse("")
                    .endsWith("java")).count() < 2) {
                Thread.sleep(200);
            }
            demo.descendants().forEach(descendants::add);
            assertTrue(netns().contains(prefix), "test premise: the demo's namespaces are up");
            demo.destroy(); // SIGTERM
            assertTrue(demo.waitFor(30, TimeUnit.SECONDS));
            Thread.sleep(2000);
            List<Long> alive = descendants.stream().filter(ProcessHandle::isAlive).map(ProcessHandle::pid).toList();
            String left = netns();
            assertEquals(List.of(), alive, "children of the signalled demo still running");
            assertTrue(!left.contains(prefix), "namespaces left behind: " + left);
        } finally {
            demo.destroyForcibly();
            for (ProcessHandle p : descendants) {
                p.destroyForcibly();
            }
            for (int n = 0; n < 2; n++) {
                run("ip", "netns", "del", prefix + "1n" + n);
                run("ip", "link", "del", prefix + "1h" + n);
            }
            run("ip", "link", "del", prefix + "1br");
        }
    }

    private static String netns() throws Exception {
        Process p = new ProcessBuilder("ip", "netns", "list").redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        p.waitFor();
        return out;
    }

    private static void run(String... cmd) throws Exception {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(ProcessBuilder.Redirect.DISCARD)
                .start();
        p.waitFor(10, TimeUnit.SECONDS);
    }
}
