package io.kvmarket.transfer.tcp;

import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;

/** One thread per transport that closes connections past their deadline, every {@value #TICK_MILLIS} ms. */
final class Watchdog implements AutoCloseable {

    static final long TICK_MILLIS = 50;

    private final Set<Connection> watched = ConcurrentHashMap.newKeySet();
    private final ScheduledExecutorService timer;

    Watchdog(String name) {
        timer = Executors.newSingleThreadScheduledExecutor(r -> {
            Thread t = new Thread(r, name);
            t.setDaemon(true);
            return t;
        });
        timer.scheduleWithFixedDelay(this::tick, TICK_MILLIS, TICK_MILLIS, TimeUnit.MILLISECONDS);
    }

    void watch(Connection c) {
        watched.add(c);
    }

    void forget(Connection c) {
        watched.remove(c);
    }

    private void tick() {
        long now = System.nanoTime();
        for (Connection c : watched) {
            c.closeIfOverdue(now);
            if (!c.channel.isOpen()) {
                watched.remove(c);
            }
        }
    }

    /** Closes every watched connection and stops. */
    @Override
    public void close() {
        timer.shutdownNow();
        for (Connection c : watched) {
            c.close();
        }
        watched.clear();
    }
}
