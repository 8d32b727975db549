#include <catch2/catch.hpp>

#include <thread>
#include <vector>

#include "config.h"
#include "granule.h"
#include "helpers.h"

TEST_CASE("gr_version") {
  REQUIRE(gr_version() ==
          (GRANULE_VERSION_MAJOR << 16 | GRANULE_VERSION_MINOR << 8 | GRANULE_VERSION_PATCH));
}

TEST_CASE("segments are aligned to their size") {
  for (size_t size : {size_t(16), size_t(3000), size_t(100000), size_t(1u << 20)}) {
    void* p = gr_malloc(size);
    uintptr_t seg = uintptr_t(p) & ~(granule::kSegmentSize - 1);
    REQUIRE(gr_owns(reinterpret_cast<void*>(seg)));
    REQUIRE(seg % granule::kSegmentSize == 0);
    gr_free(p);
  }
}

TEST_CASE("options: get, set, range checks") {
  long old = gr_option_get(GR_OPTION_PURGE_DELAY);
  REQUIRE(gr_option_set(GR_OPTION_PURGE_DELAY, 250));
  REQUIRE(gr_option_get(GR_OPTION_PURGE_DELAY) == 250);
  REQUIRE_FALSE(gr_option_set(GR_OPTION_PURGE_DELAY, -7));
  REQUIRE_FALSE(gr_option_set(GR_OPTION_COUNT_, 1));
  REQUIRE(std::string(gr_option_name(GR_OPTION_PURGE_DELAY)) == "PURGE_DELAY");
  gr_option_set(GR_OPTION_PURGE_DELAY, old);
}

TEST_CASE("first-class heaps: allocate, free from any thread, destroy returns memory") {
  gr_heap_t* heap = gr_heap_create(nullptr);
  REQUIRE(heap != nullptr);
  std::vector<void*> blocks;
  for (int i = 0; i < 100000; ++i) {
    void* p = gr_heap_malloc(heap, size_t(i % 500) + 1);
    REQUIRE(p != nullptr);
    REQUIRE(gr_heap_of(p) == heap);
    blocks.push_back(p);
  }
  void* big = gr_heap_malloc(heap, 9u << 20);
  REQUIRE(gr_heap_of(big) == heap);
  std::thread th([&] {
    for (size_t i = 0; i < blocks.size(); i += 2) gr_free(blocks[i]);
  });
  th.join();
  gr_stats_t before, after;
  gr_stats_get(&before);
  gr_heap_destroy(heap);
  gr_stats_get(&after);
  REQUIRE(after.reserved + (9u << 20) < before.reserved);
  REQUIRE_FALSE(gr_owns(blocks[1]));
}

TEST_CASE("a heap's filled segments are counted, reset and released like the others") {
  // Segments without a free slice sit apart from the rest, so searches for
  // free slices skip them; statistics, reset and destroy must not.
  gr_heap_t* heap = gr_heap_create(nullptr);
  REQUIRE(heap != nullptr);
  constexpr size_t kSize = 16384, kCount = 2560;  // 40 MiB: about ten segments filled
  gr_stats_t before, filled, reset, refilled, destroyed;
  gr_stats_get(&before);
  std::vector<void*> blocks(kCount);
  for (auto& p : blocks) REQUIRE((p = gr_heap_malloc(heap, kSize)) != nullptr);
  gr_stats_get(&filled);
  REQUIRE(filled.in_use >= before.in_use + kCount * kSize);
  REQUIRE(filled.segments >= before.segments + 9);
  gr_heap_reset(heap);
  gr_stats_get(&reset);
  REQUIRE(reset.in_use < before.in_use + kSize);
  // Every segment is free again and serves the same blocks: none is added.
  for (auto& p : blocks) REQUIRE((p = gr_heap_malloc(heap, kSize)) != nullptr);
  gr_stats_get(&refilled);
  INFO("segments: " << before.segments << " before, " << filled.segments << " filled, "
                    << refilled.segments << " refilled");
  REQUIRE(refilled.segments <= filled.segments);
  // Freed whole, then destroyed: every segment goes.
  for (size_t i = 0; i < kCount; i += 2) gr_free(blocks[i]);
  gr_heap_destroy(heap);
  gr_stats_get(&destroyed);
  REQUIRE(destroyed.segments <= before.segments);
  REQUIRE(destroyed.reserved <= before.reserved);
}

TEST_CASE("a free run past the segments searched first serves before a new segment is made") {
  // A hole in the oldest of many segments, behind 159 newer ones in the
  // heap's list, must be found before the heap maps another (spans freed at
  // random leave their holes anywhere; searches once walked the newest 128).
  // 31 slices in both builds (the hardened one adds a guard page): two a segment.
  constexpr size_t kSpan = 31 * granule::kSliceSize - 8192;
  constexpr size_t kSegments = 160;
  gr_heap_t* heap = gr_heap_create(nullptr);
  REQUIRE(heap != nullptr);
  std::vector<void*> spans(2 * kSegments);
  for (auto& p : spans) REQUIRE((p = gr_heap_malloc(heap, kSpan)) != nullptr);
  // No segment fills up (the header's slice and one more stay free), so the
  // first one made stays last in the heap's list, behind 159 newer ones.
  gr_free(spans[0]);
  gr_stats_t before, after;
  gr_stats_get(&before);
  void* again = gr_heap_malloc(heap, kSpan);
  gr_stats_get(&after);
  REQUIRE(again != nullptr);
  INFO("segments " << before.segments << " -> " << after.segments);
  REQUIRE(after.segments == before.segments);
  REQUIRE(uintptr_t(again) >> granule::kSegmentShift ==
          uintptr_t(spans[0]) >> granule::kSegmentShift);
  spans[0] = again;
  for (void* p : spans) gr_free(p);
  gr_heap_destroy(heap);
}

#if !defined(GRANULE_SECURE)  // hardened: a retired span's head is reused after fresh slices
TEST_CASE("a resident free run anywhere in the heap serves before fresh slices") {
  // A run freed a moment ago is still committed: taking it costs no page
  // fault, where fresh slices in the newest segment would fault in 2 MiB.
  // However far back its segment is, it must come first.
  constexpr size_t kSpan = 31 * granule::kSliceSize - 8192;  // as above: two a segment
  constexpr size_t kSegments = 160;
  gr_heap_t* heap = gr_heap_create(nullptr);
  REQUIRE(heap != nullptr);
  std::vector<void*> spans(2 * kSegments + 1);
  for (auto& p : spans) REQUIRE((p = gr_heap_malloc(heap, kSpan)) != nullptr);
  // The last span made a new segment: 32 fresh slices free at the front of
  // the heap's list. The oldest segment gets a resident run at the back.
  gr_free(spans[0]);
  void* again = gr_heap_malloc(heap, kSpan);
  REQUIRE(again != nullptr);
  REQUIRE(uintptr_t(again) >> granule::kSegmentShift ==
          uintptr_t(spans[0]) >> granule::kSegmentShift);
  spans[0] = again;
  for (void* p : spans) gr_free(p);
  gr_heap_destroy(heap);
}
#endif

TEST_CASE("first-class heap with a maximum refuses beyond it") {
  gr_heap_options_t opt = {0, 1u << 20};
  gr_heap_t* heap = gr_heap_create(&opt);
  size_t total = 0;
  for (;;) {
    void* p = gr_heap_malloc(heap, 1000);
    if (!p) break;
    total += 1000;
    REQUIRE(total <= (1u << 20));
  }
  REQUIRE(total > (512u << 10));
  REQUIRE(gr_heap_malloc(heap, 5u << 20) == nullptr);
  gr_heap_reset(heap);
  REQUIRE(gr_heap_malloc(heap, 1000) != nullptr);
  gr_heap_destroy(heap);
}

#if !defined(GRANULE_SECURE)  // hardened spans always move (a guard page may end one)
TEST_CASE("a span growing a little at a time stays in place until the slices after it are taken") {
  constexpr size_t kSlice = 64 * 1024;
  constexpr size_t kSpan = 300 * 1024;  // past the medium classes: five slices
  gr_heap_t* heap = gr_heap_create(nullptr);
  REQUIRE(heap != nullptr);
  // A heap of its own: a, b, c side by side in its fresh segment, from slice 1.
  auto* a = static_cast<unsigned char*>(gr_heap_malloc(heap, kSpan));
  void* b = gr_heap_malloc(heap, kSpan);
  void* c = gr_heap_malloc(heap, kSpan);
  REQUIRE((a && b && c));
  for (size_t k = 0; k < kSpan; ++k) a[k] = static_cast<unsigned char>(k * 13);
  gr_free(b);
  // Growing by an eighth, as a list's array does: in place through b's five
  // slices, then c is in the way and it moves.
  unsigned char* p = a;
  size_t n = kSpan;
  for (;;) {
    size_t m = n + n / 8;
    auto* q = static_cast<unsigned char*>(gr_heap_realloc(heap, p, m));
    REQUIRE(q != nullptr);
    REQUIRE(gr_usable_size(q) >= m);
    INFO("grown from " << n << " to " << m << " bytes");
    if (m <= 10 * kSlice) {
      REQUIRE(q == a);
    } else {
      REQUIRE(q != a);
      bool intact = true;
      for (size_t k = 0; k < n; ++k) intact &= q[k] == static_cast<unsigned char>(k * 13);
      REQUIRE(intact);
      gr_free(q);
      break;
    }
    for (size_t k = n; k < m; ++k) q[k] = static_cast<unsigned char>(k * 13);
    p = q, n = m;
  }
  // A doubling copies instead (each byte moves about once in a run of them).
  auto* d = static_cast<unsigned char*>(gr_heap_malloc(heap, kSpan));
  REQUIRE(d != nullptr);
  void* e = gr_heap_realloc(heap, d, 2 * kSpan);
  REQUIRE(e != nullptr);
  REQUIRE(e != d);
  gr_free(e);
  gr_free(c);
  gr_heap_destroy(heap);
}
#endif
