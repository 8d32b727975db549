// Memory that goes back: each test case runs in its own process (see
// meson.build), so RSS readings belong to that case alone.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "granule.h"
#include "../unit/helpers.h"

namespace {

constexpr size_t kMiB = size_t{1} << 20;

// Mixed small blocks totalling `bytes`, each written so it is resident.
std::vector<void*> allocate_mixed(size_t bytes) {
  std::vector<void*> blocks;
  uint32_t x = 7;
  for (size_t total = 0; total < bytes;) {
    x = x * 1664525u + 1013904223u;
    size_t size = 16 + (x >> 8) % 1009;
    void* p = gr_malloc(size);
    std::memset(p, int(size), size);
    blocks.push_back(p);
    total += size;
  }
  return blocks;
}

long delay_ms() { return gr_option_get(GR_OPTION_PURGE_DELAY); }

// Wait, without calling the allocator, until RSS is at most `limit`; returns
// the RSS seen last. Gives up after `deadline_ms`.
size_t wait_rss_below(size_t limit, long deadline_ms) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(deadline_ms);
  size_t rss = rss_bytes();
  while (rss > limit && std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    rss = rss_bytes();
  }
  return rss;
}

size_t tolerance(size_t base) { return std::max(base / 20, 8 * kMiB); }

}  // namespace

TEST_CASE("1 GiB of small blocks freed: gr_collect returns it at once", "[collect]") {
  size_t base = rss_bytes();
  auto blocks = allocate_mixed(1024 * kMiB);
  REQUIRE(rss_bytes() > base + 900 * kMiB);
  for (void* p : blocks) gr_free(p);
  std::vector<void*>().swap(blocks);
  gr_collect(true);
  size_t after = rss_bytes();
  INFO("base " << base / kMiB << " MiB, after collect " << after / kMiB << " MiB");
  REQUIRE(after <= base + tolerance(base));
}

TEST_CASE("1 GiB of small blocks freed: RSS falls by itself within 2 x delay + 1 s", "[idle]") {
  size_t base = rss_bytes();
  auto blocks = allocate_mixed(1024 * kMiB);
  for (void* p : blocks) gr_free(p);
  std::vector<void*>().swap(blocks);  // (the vector is glibc's memory here: linked core, not preloaded)
  size_t rss = wait_rss_below(base + tolerance(base), 2 * delay_ms() + 1000);
  INFO("base " << base / kMiB << " MiB, now " << rss / kMiB << " MiB, delay " << delay_ms());
  REQUIRE(rss <= base + tolerance(base));
}

TEST_CASE("one thread allocates, another frees, the first goes idle: RSS falls", "[cross]") {
  size_t base = rss_bytes();
  std::vector<void*> blocks;
  std::atomic<int> phase{0};
  std::thread owner([&] {
    blocks = allocate_mixed(1024 * kMiB);
    phase = 1;
    while (phase.load() != 2) std::this_thread::sleep_for(std::chrono::milliseconds(5));  // idle, alive
  });
  while (phase.load() != 1) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  std::thread freer([&] {
    for (void* p : blocks) gr_free(p);
    std::vector<void*>().swap(blocks);  // the list itself is 16 MiB of the test's own memory
  });
  freer.join();
  size_t rss = wait_rss_below(base + tolerance(base), 2 * delay_ms() + 1000);
  phase = 2;
  owner.join();
  INFO("base " << base / kMiB << " MiB, now " << rss / kMiB << " MiB");
  REQUIRE(rss <= base + tolerance(base));
}

TEST_CASE("500 MiB bursts and idle periods, 20 times: peak stays near one burst", "[bursts]") {
  size_t base = rss_bytes();
  size_t first_burst_peak = 0, peak = 0;
  for (int round = 0; round < 20; ++round) {
    auto blocks = allocate_mixed(500 * kMiB);
    size_t rss = rss_bytes();
    if (round == 0) first_burst_peak = rss;
    peak = std::max(peak, rss);
    for (void* p : blocks) gr_free(p);
    std::this_thread::sleep_for(std::chrono::milliseconds(round % 2 ? 50 : delay_ms() + 100));
  }
  INFO("base " << base / kMiB << " first " << first_burst_peak / kMiB << " peak " << peak / kMiB);
  REQUIRE(peak - base <= (first_burst_peak - base) * 11 / 10);
}

TEST_CASE("a heap with 100 000 blocks destroyed in one call returns its memory", "[heap-destroy]") {
  gr_collect(true);
  size_t base = rss_bytes();
  gr_stats_t st0, st1, st2;
  gr_stats_get(&st0);
  gr_heap_t* heap = gr_heap_create(nullptr);
  for (int i = 0; i < 100000; ++i) {
    size_t size = 32 + size_t(i % 900);
    void* p = gr_heap_malloc(heap, size);
    std::memset(p, 1, size);
  }
  gr_stats_get(&st1);
  REQUIRE(rss_bytes() > base + 30 * kMiB);
  REQUIRE(st1.committed > st0.committed + 30 * kMiB);
  gr_heap_destroy(heap);
  gr_stats_get(&st2);
  REQUIRE(st2.committed <= st0.committed + kMiB);
  REQUIRE(st2.reserved <= st0.reserved + kMiB);
  REQUIRE(rss_bytes() <= base + 4 * kMiB);
}

TEST_CASE("heaps used from 4 threads with cross-thread frees", "[heap-threads]") {
  gr_heap_t* heap = gr_heap_create(nullptr);
  constexpr int kThreads = 4, kPer = 50000;
  std::vector<std::vector<void*>> made(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPer; ++i) {
        size_t size = 1 + size_t(i % 2000);
        void* p = gr_heap_malloc(heap, size);
        REQUIRE(p != nullptr);
        fill(p, size, uint8_t(t + i));
        made[t].push_back(p);
      }
    });
  }
  for (auto& th : threads) th.join();
  threads.clear();
  std::atomic<int> bad{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      int victim = (t + 1) % kThreads;
      for (int i = 0; i < kPer; ++i) {
        size_t size = 1 + size_t(i % 2000);
        if (!check(made[victim][i], size, uint8_t(victim + i))) bad++;
        if (gr_heap_of(made[victim][i]) != heap) bad++;
        gr_free(made[victim][i]);
      }
    });
  }
  for (auto& th : threads) th.join();
  REQUIRE(bad.load() == 0);
  void* p = gr_heap_malloc(heap, 100);
  REQUIRE(p != nullptr);
  gr_heap_destroy(heap);
}
