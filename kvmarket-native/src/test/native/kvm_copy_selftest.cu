/*
 * Host-only self-test of kvm_copy.cu, run by the build where nvcc exists (no GPU needed): argument
 * checks, the segment table (absolute addresses, split at kChunkBytes), and the per-segment copy routine
 * of the kernel executed on the CPU with several thread counts, checked byte for byte. On a machine
 * without a driver it also checks that the probe answers with a CUDA code instead of crashing.
 */
#include "kvm_copy.cu"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

int failures = 0;
int checks = 0;

void check(bool ok, const char *what, long long a, long long b) {
    checks++;
    if (!ok) {
        failures++;
        std::printf("FAIL %s: got %lld, expected %lld\n", what, a, b);
    }
}

#define CHECK_EQ(a, b, what) check((long long) (a) == (long long) (b), what, (long long) (a), (long long) (b))

constexpr size_t kSize = 1u << 20;

struct Case {
    const char *name;
    std::vector<int64_t> so, d, len;
};

/* Runs the table + copy routine on the host, as `nthreads` threads would, and compares every byte. */
void run_case(const Case &c, const unsigned char *src, int nthreads) {
    std::vector<unsigned char> dst(kSize + 64, 0xEE);
    unsigned char *dst_base = dst.data() + (16 - reinterpret_cast<uintptr_t>(dst.data()) % 16) % 16;
    std::vector<unsigned char> expected(dst_base, dst_base + kSize);
    const int32_t n = (int32_t) c.len.size();
    for (int32_t i = 0; i < n; i++) {
        std::memcpy(expected.data() + c.d[i], src + c.so[i], (size_t) c.len[i]);
    }
    const uint64_t sb = reinterpret_cast<uint64_t>(src), db = reinterpret_cast<uint64_t>(dst_base);
    CHECK_EQ(validate(sb, db, c.so.data(), c.d.data(), c.len.data(), n), KVM_OK, c.name);
    const size_t items = table_entries(c.len.data(), n);
    std::vector<Segment> table(items);
    fill_table(table.data(), sb, db, c.so.data(), c.d.data(), c.len.data(), n);
    for (const Segment &seg : table) {
        check(seg.len > 0 && seg.len <= kChunkBytes, "entry length within chunk", (long long) seg.len, 0);
        for (int t = 0; t < nthreads; t++) {
            copy_segment(seg, (uint64_t) t, (uint64_t) nthreads);
        }
    }
    bool same = std::memcmp(expected.data(), dst_base, kSize) == 0;
    checks++;
    if (!same) {
        failures++;
        std::printf("FAIL %s with %d threads: bytes differ\n", c.name, nthreads);
    }
}

Case paged(int blocks, int64_t block_bytes, unsigned seed) {
    Case c{"paged", {}, {}, {}};
    std::vector<int64_t> order(blocks);
    for (int i = 0; i < blocks; i++) {
        order[i] = i;
    }
    std::srand(seed);
    for (int i = blocks - 1; i > 0; i--) {
        std::swap(order[i], order[std::rand() % (i + 1)]);
    }
    for (int i = 0; i < blocks; i++) {
        c.so.push_back(i * block_bytes);
        c.d.push_back(order[i] * block_bytes);
        c.len.push_back(block_bytes);
    }
    return c;
}

} // namespace

int main() {
    std::vector<unsigned char> src_storage(kSize + 64);
    unsigned char *src = src_storage.data() + (16 - reinterpret_cast<uintptr_t>(src_storage.data()) % 16) % 16;
    std::srand(42);
    for (size_t i = 0; i < kSize; i++) {
        src[i] = (unsigned char) std::rand();
    }

    const Case mixed{"mixed",
                     {0, 131072, 3, 17, 200000, 5, 262144, (int64_t) kSize - 100},
                     {65536, 16, 500001, 8193, 300000, 7, 655360, (int64_t) kSize - 50},
                     {32768, 4096, 1001, 4099, 1000, 0, 307200, 50}};
    for (int threads : {1, 7, 256}) {
        run_case(mixed, src, threads);
        run_case(paged(4096, 128, 7), src, threads);
        run_case(paged(64, 4096, 11), src, threads);
    }

    /* A 600 KiB segment becomes 256 KiB + 256 KiB + 88 KiB entries at consecutive addresses. */
    const int64_t zero = 0, big = 600 * 1024;
    CHECK_EQ(table_entries(&big, 1), 3, "entries of a 600 KiB segment");
    Segment t3[3];
    fill_table(t3, 0x10000, 0x20000, &zero, &zero, &big, 1);
    CHECK_EQ(t3[2].src, 0x10000 + 2 * kChunkBytes, "third entry source");
    CHECK_EQ(t3[2].dst, 0x20000 + 2 * kChunkBytes, "third entry destination");
    CHECK_EQ(t3[2].len, big - 2 * (int64_t) kChunkBytes, "third entry length");

    const int64_t neg = -1, sixteen = 16, near_end = 4000, hundred = 100;
    CHECK_EQ(validate(4096, 8192, &zero, &zero, &neg, 1), KVM_EINVAL, "negative length");
    CHECK_EQ(validate(4096, 8192, &neg, &zero, &sixteen, 1), KVM_EINVAL, "negative source offset");
    CHECK_EQ(validate(4096, 8192, &zero, &zero, &sixteen, 0), KVM_EINVAL, "count 0");
    CHECK_EQ(validate(0, 8192, &zero, &zero, &sixteen, 1), KVM_EINVAL, "null base");
    CHECK_EQ(validate(4096, (uint64_t) -4096, &zero, &near_end, &hundred, 1), KVM_EINVAL, "address overflow");
    CHECK_EQ(validate(4096, 8192, &zero, &zero, &sixteen, 1), KVM_OK, "valid segment");

    CHECK_EQ(std::strcmp(kvm_error_name(-(KVM_ECUDA_BASE + 100)), "cudaErrorNoDevice"), 0, "CUDA error name");
    CHECK_EQ(std::strcmp(kvm_error_name(KVM_EINVAL), "KVM_EINVAL"), 0, "EINVAL name");

    const int probe = kvm_cuda_probe();
    std::printf("kvm_cuda_probe() = %d (%s)\n", probe, kvm_error_name(probe));
    if (probe < 0) {
        check(is_cuda_code(probe), "probe failure is a CUDA code", probe, -KVM_ECUDA_BASE);
    }

    std::printf("kvm_copy_selftest: %d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
