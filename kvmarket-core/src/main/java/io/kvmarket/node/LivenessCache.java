package io.kvmarket.node;

import java.util.concurrent.ConcurrentHashMap;

/**
 * Remembers whether peer processes are alive for a short time, so a lookup over many offers of the same owner
 * reads /proc once rather than once per offer. A process that died is reported dead at most {@code ttlNanos}
 * late; the post-copy generation check keeps that window from ever delivering wrong bytes.
 */
public final class LivenessCache {

    private final long ttlNanos;
    private final ConcurrentHashMap<ProcessIdentity, long[]> checked = new ConcurrentHashMap<>();

    public LivenessCache(long ttlNanos) {
        this.ttlNanos = ttlNanos;
    }

    public boolean isAlive(ProcessIdentity process) {
        long now = System.nanoTime();
        long[] entry = checked.get(process);
        if (entry != null && now - entry[1] < ttlNanos) {
            return entry[0] != 0;
        }
        boolean alive = process.isAlive();
        if (checked.size() > 4096) {
            checked.clear();
        }
        checked.put(process, new long[] {alive ? 1 : 0, now});
        return alive;
    }
}
