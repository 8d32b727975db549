// 10 000 thread lifetimes, four at a time. Each thread verifies and frees the
// blocks another thread of the previous round left behind (so frees arrive
// after their allocating thread exited), then leaves its own for the next
// round and exits. Thread heaps must be handed on and their memory reused:
// RSS and the number of live heaps stay bounded.
#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "granule.h"
#include "preload.h"

namespace {

constexpr int kConcurrent = 4;
constexpr int kRounds = 2500;  // 4 * 2500 = 10 000 threads
constexpr int kBlocksPerThread = 300;

struct Handoff {
  std::vector<uint32_t*> blocks;  // [0] = words, then a pattern
};

std::atomic<long> g_bad{0};

uint32_t* make_block(uint32_t words, uint32_t salt) {
  auto* b = static_cast<uint32_t*>(malloc(words * sizeof(uint32_t)));
  b[0] = words;
  for (uint32_t i = 1; i < words; ++i) b[i] = words ^ (i * 2654435761u) ^ salt;
  return b;
}

bool block_ok(const uint32_t* b, uint32_t salt) {
  for (uint32_t i = 1; i < b[0]; ++i)
    if (b[i] != (b[0] ^ (i * 2654435761u) ^ salt)) return false;
  return true;
}

void life(Handoff* take, Handoff* leave, uint32_t salt_in, uint32_t salt_out, uint32_t seed) {
  for (uint32_t* b : take->blocks) {
    if (!granule_owns(b) || !block_ok(b, salt_in)) g_bad++;
    free(b);
  }
  take->blocks.clear();
  leave->blocks.reserve(kBlocksPerThread);
  uint32_t x = seed | 1;
  for (int i = 0; i < kBlocksPerThread; ++i) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    uint32_t words = i == 0 ? 30000 : 2 + x % 1000;  // one large span, the rest small/medium
    leave->blocks.push_back(make_block(words, salt_out));
  }
}

}  // namespace

int main() {
  if (!granule_owns_fn()) {
    printf("not running on granule\n");
    return 1;
  }
  std::vector<Handoff> buffers[2] = {std::vector<Handoff>(kConcurrent),
                                     std::vector<Handoff>(kConcurrent)};
  size_t rss_warm = 0, rss_peak = 0;
  size_t heaps_peak = 0;
  for (int round = 0; round < kRounds; ++round) {
    auto& take = buffers[round % 2];
    auto& leave = buffers[(round + 1) % 2];
    std::vector<std::thread> threads;
    for (int j = 0; j < kConcurrent; ++j) {
      // Thread j frees what thread j+1 of the previous round allocated.
      threads.emplace_back(life, &take[(j + 1) % kConcurrent], &leave[j], uint32_t(round - 1),
                           uint32_t(round), uint32_t(round * 7919 + j));
    }
    for (auto& t : threads) t.join();
    if (round == 250) rss_warm = rss_bytes();
    if (round >= 250) {
      size_t r = rss_bytes();
      if (r > rss_peak) rss_peak = r;
      gr_stats_t st;
      gr_stats_get(&st);
      if (st.heaps > heaps_peak) heaps_peak = st.heaps;
    }
  }
  for (auto& h : buffers[kRounds % 2]) {
    for (uint32_t* b : h.blocks) {
      if (!block_ok(b, kRounds - 1)) g_bad++;
      free(b);
    }
  }
  size_t growth = rss_peak > rss_warm ? rss_peak - rss_warm : 0;
  printf(
      "thread_churn: %d threads, RSS after 1000 threads %zu KiB, peak after %zu KiB "
      "(growth %zu KiB), live heaps at most %zu, %ld bad blocks\n",
      kConcurrent * kRounds, rss_warm >> 10, rss_peak >> 10, growth >> 10, heaps_peak,
      g_bad.load());
  bool ok = g_bad == 0 && growth <= (16u << 20) && heaps_peak <= kConcurrent + 2;
  return ok ? 0 : 1;
}
