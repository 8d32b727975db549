// Huge blocks of one to four segments, allocated by four threads and freed
// by whichever thread takes them out of a shared slot, while the purge
// thread releases idle cached mappings (run with a purge delay of a few
// milliseconds). Cached mappings are split for smaller blocks and rejoin
// the mapping a freed block ends at: each thread's view of the cache must
// stay consistent with the purge unmapping what it took off the cache.
// Usage: huge_cache [ITERATIONS_PER_THREAD]. Exits non-zero on a damaged block.
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "granule.h"

namespace {

std::atomic<char*> g_slots[8];
std::atomic<bool> g_failed{false};

void check_and_free(char* p) {
  size_t n = *reinterpret_cast<size_t*>(p);
  if (gr_usable_size(p) < n || p[n - 1] != char(n)) {
    std::fprintf(stderr, "huge_cache: damaged block %p (size %zu)\n", static_cast<void*>(p), n);
    g_failed.store(true);
  }
  gr_free(p);
}

}  // namespace

int main(int argc, char** argv) {
  int iters = argc > 1 ? std::atoi(argv[1]) : 50000;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([t, iters] {
      uint64_t r = uint64_t(t) * 0x9E3779B97F4A7C15ull + 1;
      for (int i = 0; i < iters && !g_failed.load(std::memory_order_relaxed); ++i) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        size_t n = (size_t(3) << 20) + (r >> 8) % (size_t(13) << 20);
        auto* p = static_cast<char*>(gr_malloc(n));
        if (!p) {
          std::fprintf(stderr, "huge_cache: allocation of %zu failed\n", n);
          g_failed.store(true);
          return;
        }
        *reinterpret_cast<size_t*>(p) = n;
        p[n - 1] = char(n);
        if (char* old = g_slots[r % 8].exchange(p)) check_and_free(old);
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& s : g_slots)
    if (char* p = s.exchange(nullptr)) check_and_free(p);
  gr_collect(true);
  gr_stats_t st;
  gr_stats_get(&st);
  std::printf("huge_cache: 4 threads x %d huge blocks, %s; %zu huge left\n", iters,
              g_failed.load() ? "DAMAGED" : "all intact", st.huge_blocks);
  return g_failed.load() || st.huge_blocks != 0 ? 1 : 0;
}
