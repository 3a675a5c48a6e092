"""Offline what-if for the export pool's eviction on the Mooncake synthetic trace: one cache of trace blocks
(512-token chunks), prefix-closed hits, hits touched deepest first and exports inserted tail first, as
TraceReplay drives the marketplace. Its LRU column reproduces TraceReplay's single-engine hit rates exactly, so
the other policies are compared on equal terms.

Usage: python3 benchmarks/trace/eviction_policies.py trace.jsonl
"""
import collections
import json
import sys

BLOCK = 512
if len(sys.argv) < 2:
    sys.exit("usage: eviction_policies.py trace.jsonl  (a Mooncake-format trace)")
path = sys.argv[1]
requests = [(d["input_length"], d["hash_ids"]) for d in map(json.loads, open(path))]


def hit_rate(policy, capacity):
    cache = policy(capacity)
    hit = prompt = 0
    for length, ids in requests:
        importable, full = (length - 1) // BLOCK, length // BLOCK
        k = 0
        while k < importable and cache.has(ids[k]):
            k += 1
        hit += k * BLOCK
        prompt += length
        cache.hit(ids[:k])
        cache.export(ids[:full])
    return hit / prompt


class Lru:
    """The pool today: least recently used first, a prefix's tail before its root."""

    def __init__(self, capacity):
        self.capacity, self.d = capacity, collections.OrderedDict()

    def has(self, x):
        return x in self.d

    def hit(self, xs):
        for x in reversed(xs):
            self.d.move_to_end(x)

    def export(self, xs):
        for x in reversed(xs):
            if x in self.d:
                self.d.move_to_end(x)
                continue
            if len(self.d) >= self.capacity:
                self.d.popitem(last=False)
            self.d[x] = True


class SegmentedLru:
    """A probation segment for new chunks and a protected one (80%) for chunks hit at least once."""

    def __init__(self, capacity):
        self.capacity, self.protected_cap = capacity, int(capacity * 0.8)
        self.probation, self.protected = collections.OrderedDict(), collections.OrderedDict()

    def has(self, x):
        return x in self.probation or x in self.protected

    def hit(self, xs):
        for x in reversed(xs):
            if x in self.protected:
                self.protected.move_to_end(x)
            elif x in self.probation:
                del self.probation[x]
                self.protected[x] = True
                if len(self.protected) > self.protected_cap:
                    y, _ = self.protected.popitem(last=False)
                    self.probation[y] = True

    def export(self, xs):
        for x in reversed(xs):
            if self.has(x):
                continue
            while len(self.probation) + len(self.protected) >= self.capacity:
                (self.probation or self.protected).popitem(last=False)
            self.probation[x] = True


class S3Fifo:
    """S3-FIFO (Yang et al., SOSP 2023): a small FIFO for new chunks, a main FIFO with reinsertion, a ghost list."""

    def __init__(self, capacity):
        self.capacity, self.small_cap = capacity, max(1, capacity // 10)
        self.small, self.main, self.ghost = (collections.OrderedDict() for _ in range(3))
        self.freq = {}

    def has(self, x):
        return x in self.small or x in self.main

    def hit(self, xs):
        for x in xs:
            self.freq[x] = min(3, self.freq.get(x, 0) + 1)

    def _evict_one(self):
        while True:
            if len(self.small) >= self.small_cap or not self.main:
                x, _ = self.small.popitem(last=False)
                if self.freq.get(x, 0) > 0:
                    self.main[x], self.freq[x] = True, 0
                    continue
                self.freq.pop(x, None)
                self.ghost[x] = True
                if len(self.ghost) > self.capacity:
                    self.ghost.popitem(last=False)
                return
            x, _ = self.main.popitem(last=False)
            if self.freq.get(x, 0) > 0:
                self.freq[x] -= 1
                self.main[x] = True
                continue
            self.freq.pop(x, None)
            return

    def export(self, xs):
        for x in xs:
            if self.has(x):
                continue
            while len(self.small) + len(self.main) >= self.capacity:
                self._evict_one()
            if x in self.ghost:
                del self.ghost[x]
                self.main[x] = True
            else:
                self.small[x] = True
            self.freq[x] = 0


for capacity in (4096, 8192, 16384):
    rates = " ".join(f"{p.__name__}={hit_rate(p, capacity):.4f}" for p in (Lru, SegmentedLru, S3Fifo))
    print(f"eviction: pool_chunks={capacity} {rates}")
