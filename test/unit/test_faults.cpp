// The OS refuses memory: the test-only hook fails the n-th reserve or
// commit, for n = 1, 2, ... until a whole allocation sequence gets through.
// Every failure must be a null with ENOMEM, leave nothing reserved or
// committed behind once freed, and the allocator must work again after.
#include <catch2/catch.hpp>

#include <cerrno>
#include <thread>
#include <vector>

#include "granule.h"
#include "helpers.h"
#include "os/os.h"

namespace {

struct Sequence {
  std::vector<void*> blocks;
  gr_heap_t* heap = nullptr;
  int failures = 0;
  bool bad_errno = false;

  void keep(void* p) {
    if (p) {
      blocks.push_back(p);
    } else {
      ++failures;
      bad_errno |= errno != ENOMEM;
    }
  }
  // Every kind of request that needs the OS: slabs of new classes (100
  // blocks of 100 000 bytes take a run of medium slabs across segments;
  // more only cost time, above all in the hardened build, which wipes
  // every block it frees, in every round), large spans that fill segments,
  // huge mappings, a first-class heap.
  void run() {
    for (int i = 0; i < 300; ++i) keep(gr_malloc(24));
    for (int i = 0; i < 300; ++i) keep(gr_malloc(3000));
    for (int i = 0; i < 100; ++i) keep(gr_malloc(100000));
    for (int i = 0; i < 12; ++i) keep(gr_malloc(size_t(1) << 20));
    keep(gr_malloc(size_t(9) << 20));
    keep(gr_calloc(1, size_t(9) << 20));
    keep(gr_aligned_alloc(size_t(1) << 20, size_t(3) << 20));
    void* out = nullptr;
    int rc = gr_posix_memalign(&out, 4096, size_t(1) << 20);
    if (rc == 0)
      keep(out);
    else
      ++failures, bad_errno |= rc != ENOMEM;
    void* r = gr_malloc(64);
    if (r) {
      void* grown = gr_realloc(r, size_t(6) << 20);
      keep(grown ? grown : r);
      if (!grown) ++failures, bad_errno |= errno != ENOMEM;
    }
    gr_heap_options_t opt = {size_t(8) << 20, 0};
    heap = gr_heap_create(&opt);
    if (!heap) {
      ++failures, bad_errno |= errno != ENOMEM;
    } else {
      for (int i = 0; i < 100; ++i) {
        void* p = gr_heap_malloc(heap, 5000);
        if (!p) ++failures, bad_errno |= errno != ENOMEM;
      }
    }
  }
  void release() {
    for (void* p : blocks) gr_free(p);
    blocks.clear();
    if (heap) gr_heap_destroy(heap);
    heap = nullptr;
  }
};

gr_stats_t settled() {
  gr_collect(true);
  gr_stats_t s;
  gr_stats_get(&s);
  return s;
}

}  // namespace

TEST_CASE("the OS refusing the n-th reserve or commit: ENOMEM, no leak, recovery") {
  // A thread of its own: a fresh heap whose every slab needs the OS.
  std::thread t([] {
    gr_free(gr_malloc(8));  // the thread heap itself exists before counting
    gr_stats_t base = settled();
    int n = 1;
    for (;; ++n) {
      granule::os::fail_after(n);
      Sequence seq;
      seq.run();
      granule::os::fail_after(0);
      bool failed = seq.failures != 0;
      INFO("failing OS call " << n << ": " << seq.failures << " requests failed");
      REQUIRE_FALSE(seq.bad_errno);
      seq.release();
      gr_stats_t after = settled();
      REQUIRE(after.reserved == base.reserved);
      REQUIRE(after.committed == base.committed);
      REQUIRE(after.segments == base.segments);
      REQUIRE(after.huge_blocks == base.huge_blocks);
      // Memory is back: the same sequence gets through.
      Sequence again;
      again.run();
      REQUIRE(again.failures == 0);
      again.release();
      settled();  // next round starts with empty caches: every request needs the OS
      if (!failed) break;
    }
    REQUIRE(n > 5);  // the hook really failed calls along the way
  });
  t.join();
}

TEST_CASE("a failed commit in a fresh segment does not leave the segment behind") {
  std::thread t([] {
    constexpr size_t kSpan = 21 * 65536 - 8192;  // 21 slices: three fill slices 1..63
    auto reserves = [] {
      gr_stats_t s;
      gr_stats_get(&s);
      return s.os_reserves;
    };
    // Allocate spans until one needs a new segment (the heap may be a reused
    // one with room elsewhere), then fill that segment: the next span needs
    // a new segment again: reserve, commit its header, commit its slices.
    std::vector<void*> spans;
    for (;;) {
      uint64_t before = reserves();
      spans.push_back(gr_malloc(kSpan));
      if (reserves() != before) break;
    }
    for (int i = 0; i < 2; ++i) spans.push_back(gr_malloc(kSpan));
    gr_stats_t before = settled();
    granule::os::fail_after(3);
    errno = 0;
    void* p = gr_malloc(kSpan);
    granule::os::fail_after(0);
    bool refused = p == nullptr && errno == ENOMEM;
    gr_stats_t after = settled();
    for (void* s : spans) gr_free(s);
    gr_free(p);
    REQUIRE(refused);
    REQUIRE(after.segments == before.segments);
    REQUIRE(after.reserved == before.reserved);
  });
  t.join();
}
