// What stays resident while free memory waits for its purge delay.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "granule.h"
#include "helpers.h"

namespace {

// Runs fn in a new thread with the purge delay set to `delay` ms.
template <class Fn>
void with_purge_delay(long delay, Fn fn) {
  long old = gr_option_get(GR_OPTION_PURGE_DELAY);
  REQUIRE(gr_option_set(GR_OPTION_PURGE_DELAY, delay));
  std::thread t(fn);
  t.join();
  gr_option_set(GR_OPTION_PURGE_DELAY, old);
}

size_t committed() {
  gr_stats_t s;
  gr_stats_get(&s);
  return s.committed;
}

}  // namespace

#if !defined(GRANULE_SECURE)  // the hardened build reuses a freed span's first slice last
TEST_CASE("spans allocated and freed in turn reuse their resident slices") {
  // Purged never: only the choice of slices decides what is committed.
  with_purge_delay(-1, [] {
    gr_collect(true);
    size_t before = committed();
    for (int i = 0; i < 200; ++i) {
      void* p = gr_malloc(200 * 1024);  // a span of four slices
      REQUIRE(p != nullptr);
      std::memset(p, i, 200 * 1024);
      gr_free(p);
    }
    // Each span used to avoid the one before it and commit a slice more.
    size_t after = committed();
    INFO("committed grew by " << (after - before));
    REQUIRE(after < before + (2u << 20));  // the old way: 200 slices, 12.5 MiB
  });
}
#endif

TEST_CASE("memory that grows while free slices wait for their delay gives them back first") {
  with_purge_delay(60 * 1000, [] {
    gr_collect(true);
    // 48 small slabs, every second one emptied: idle resident slices, each
    // between two live ones, too short a run for anything bigger.
    std::vector<void*> keep;
    bool none_purged;
    {
      std::vector<void*> blocks;
      for (int i = 0; i < 48 * 64; ++i) {
        void* p = gr_malloc(1000);
        REQUIRE(p != nullptr);
        std::memset(p, 1, 1000);
        blocks.push_back(p);
      }
      size_t before = committed();
      for (void* p : blocks) {
        if ((uintptr_t(p) >> 16) % 2 == 0)
          gr_free(p);
        else
          keep.push_back(p);
      }
      none_purged = committed() == before;  // about 1.5 MiB now idle, still committed
    }
    REQUIRE(none_purged);
    // A span of 16 slices needs fresh ones: as many idle ones go back.
    size_t s0 = committed();
    void* big = gr_malloc(1u << 20);
    REQUIRE(big != nullptr);
    std::memset(big, 2, 1u << 20);
    size_t s1 = committed();
    INFO("a 1 MiB span changed committed by " << (long long)(s1 - s0));
    REQUIRE(s1 < s0 + (256u << 10));
    // A fresh huge mapping takes the rest of them (about 0.5 MiB).
    void* huge = gr_malloc(8u << 20);
    REQUIRE(huge != nullptr);
    std::memset(huge, 3, 8u << 20);
    size_t s2 = committed();
    INFO("an 8 MiB block changed committed by " << (long long)(s2 - s1));
    REQUIRE(s2 < s1 + (8u << 20) - (256u << 10));
    gr_free(huge);
    gr_free(big);
    for (void* p : keep) gr_free(p);
  });
}
