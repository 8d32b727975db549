#include <catch2/catch.hpp>

#include <vector>

#include "granule.h"
#include "helpers.h"
#include "size_classes.h"
#include "slab.h"

using namespace granule;

TEST_CASE("size classes waste at most 25% above 64 bytes, about 10% on average") {
  double total = 0;
  size_t n = 0;
  for (size_t size = 65; size <= kMediumMax; ++size) {
    size_t block = class_block_size(size_class_of(size));
    REQUIRE(block >= size);
    double waste = double(block - size) / double(size);
    REQUIRE(waste <= 0.25);
    total += waste, ++n;
  }
  REQUIRE(total / double(n) < 0.13);
}

TEST_CASE(
    "medium slabs leave at most a tenth of their slices unused, and hold three blocks or more") {
  // Once its pages were touched a slab's unused tail stays resident.
  for (unsigned c = kSmallClassCount; c < kClassCount; ++c) {
    size_t bytes = size_t(class_slab_slices(c)) * kSliceSize, block = class_block_size(c);
    INFO("class " << c << ": " << block << "-byte blocks in " << class_slab_slices(c) << " slices");
    REQUIRE(class_slab_slices(c) <= 8);
    REQUIRE(bytes / block >= 3);
    REQUIRE((bytes % block) * 10 <= bytes);
  }
}

TEST_CASE("every size up to 64 KiB: aligned, usable, writable, within the waste bound") {
  std::vector<void*> keep;
  for (size_t size = 1; size <= 64 * 1024; ++size) {
    void* p = gr_malloc(size);
    REQUIRE(p != nullptr);
    REQUIRE(uintptr_t(p) % 16 == 0);
    size_t usable = gr_usable_size(p);
    REQUIRE(usable >= size);
    // The hardened build's canary takes the last bytes of the class.
    if (size > 64) REQUIRE(double(usable - size) <= 0.25 * double(size) + double(kCanarySize));
    fill(p, usable, uint8_t(size));
    REQUIRE(check(p, usable, uint8_t(size)));
    REQUIRE(gr_owns(p));
    if (size % 7 == 0)
      keep.push_back(p);
    else
      gr_free(p);
  }
  for (void* p : keep) gr_free(p);
}

TEST_CASE("bad requests return null with errno and leave the allocator usable") {
  errno = 0;
  REQUIRE(gr_malloc(SIZE_MAX) == nullptr);
  REQUIRE(errno == ENOMEM);
  errno = 0;
  REQUIRE(gr_calloc(SIZE_MAX / 2, 3) == nullptr);
  REQUIRE(errno == ENOMEM);
  void* p = reinterpret_cast<void*>(1);
  REQUIRE(gr_posix_memalign(&p, 24, 10) == EINVAL);
  REQUIRE(gr_posix_memalign(&p, 4, 10) == EINVAL);
  REQUIRE(p == reinterpret_cast<void*>(1));
  errno = 0;
  REQUIRE(gr_aligned_alloc(3, 10) == nullptr);
  REQUIRE(errno == EINVAL);
  gr_free(nullptr);
  void* q = gr_malloc(100);
  REQUIRE(q != nullptr);
  gr_free(q);
}

TEST_CASE("calloc zeroes, also after reuse") {
  for (size_t size : {size_t(8), size_t(100), size_t(5000), size_t(200000), size_t(5u << 20)}) {
    void* p = gr_malloc(size);
    std::memset(p, 0xAB, size);
    gr_free(p);
    auto* z = static_cast<unsigned char*>(gr_calloc(1, size));
    REQUIRE(z != nullptr);
    bool all_zero = true;
    for (size_t i = 0; i < size; ++i) all_zero &= z[i] == 0;
    REQUIRE(all_zero);
    gr_free(z);
  }
}

TEST_CASE("realloc keeps contents across classes, spans and huge blocks, in place when it fits") {
  size_t size = 1;
  void* p = gr_malloc(size);
  fill(p, size, 7);
  while (size < (64u << 20)) {
    size_t next = size * 3 + 5;
    void* q = gr_realloc(p, next);
    REQUIRE(q != nullptr);
    REQUIRE(check(q, size, 7));
    fill(q, next, 7);
    p = q, size = next;
  }
  // Shrink through every range again.
  while (size > 4) {
    size_t next = size / 3;
    void* q = gr_realloc(p, next);
    REQUIRE(check(q, next, 7));
    p = q, size = next;
  }
  gr_free(p);
  void* a = gr_malloc(100);
  size_t usable = gr_usable_size(a);
  REQUIRE(gr_realloc(a, usable) == a);
  REQUIRE(gr_realloc(a, usable - 3) == a);
  gr_free(a);
}

TEST_CASE("aligned allocation up to 1 MiB and beyond") {
  for (size_t align = 16; align <= (8u << 20); align *= 2) {
    for (size_t size : {size_t(1), size_t(24), align / 2 + 1, align, align * 3, size_t(300000)}) {
      void* p = gr_aligned_alloc(align, size);
      REQUIRE(p != nullptr);
      REQUIRE(uintptr_t(p) % align == 0);
      REQUIRE(gr_usable_size(p) >= size);
      fill(p, size, 3);
      REQUIRE(check(p, size, 3));
      gr_free(p);
      void* q = nullptr;
      REQUIRE(gr_posix_memalign(&q, align, size) == 0);
      REQUIRE(uintptr_t(q) % align == 0);
      gr_free(q);
    }
  }
}

TEST_CASE("gr_owns is exact on any pointer value") {
  int on_stack = 0;
  static int in_data = 0;
  REQUIRE_FALSE(gr_owns(&on_stack));
  REQUIRE_FALSE(gr_owns(&in_data));
  REQUIRE_FALSE(gr_owns(nullptr));
  REQUIRE_FALSE(gr_owns(reinterpret_cast<void*>(~uintptr_t(0))));
  REQUIRE_FALSE(gr_owns(reinterpret_cast<void*>(uintptr_t(1) << 62)));
  void* big = gr_malloc(10u << 20);
  REQUIRE(gr_owns(big));
  REQUIRE(gr_owns(static_cast<char*>(big) + (9u << 20)));
  gr_free(big);
}

TEST_CASE("invalid frees leave the heap intact") {
  // The hardened build aborts instead (test/suites/errors.sh shows it).
  if constexpr (kSecure) return;
  int on_stack = 0;
  gr_free(&on_stack);
  char* p = static_cast<char*>(gr_malloc(64));
  gr_free(p + 16);  // interior
  gr_free(p);
  gr_free(p);  // double
  void* a = gr_malloc(64);
  void* b = gr_malloc(64);
  REQUIRE(a != b);
  fill(a, 64, 1);
  fill(b, 64, 2);
  REQUIRE(check(a, 64, 1));
  REQUIRE(check(b, 64, 2));
  gr_free(a);
  gr_free(b);
}

namespace {
// Every offset the free paths may compute for a pointer into a slab's first
// slice (the header of slice 0 gives negative ones) or anywhere in a span.
void check_block_start_test(uint32_t block_size, uint32_t carved_blocks, int64_t span) {
  Slab s{};
  slab_set_block_size(&s, block_size);
  s.limit = carved_blocks * slab_step(&s);
  auto expect = [&](int64_t off) {
    return off >= 0 && off % block_size == 0 && off / block_size < int64_t(carved_blocks);
  };
  auto probe = [&](int64_t off) {
    if (slab_block_start(&s, uint64_t(off)) != expect(off)) {
      INFO("block " << block_size << ", carved " << carved_blocks << ", offset " << off);
      REQUIRE(slab_block_start(&s, uint64_t(off)) == expect(off));
    }
  };
  for (int64_t off = -int64_t(kSegmentHeaderSize); off < 4096; ++off) probe(off);
  for (int64_t k = 0; k * block_size <= span; ++k)
    for (int64_t d : {-16, -8, -1, 0, 1, 8, 16}) probe(k * block_size + d);
  uint64_t x = block_size;
  for (int i = 0; i < 20000; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    probe(int64_t((x >> 20) % uint64_t(span + kSegmentHeaderSize)) - int64_t(kSegmentHeaderSize));
  }
}
}  // namespace

TEST_CASE("the free path's block-start test accepts exactly the carved block starts") {
  for (unsigned c = 0; c < kClassCount; ++c) {
    uint32_t block = uint32_t(class_block_size(c));
    int64_t bytes = int64_t(class_slab_slices(c)) * int64_t(kSliceSize);
    uint32_t fit = uint32_t(bytes / block);
    for (uint32_t carved : {0u, 1u, fit / 2, fit}) check_block_start_test(block, carved, bytes);
  }
  // Large spans: one block of whole slices (less the header in slice 0).
  for (size_t slices = 1; slices < kSlicesPerSegment / 2; ++slices) {
    for (size_t header : {size_t{0}, kSegmentHeaderSize}) {
      auto bytes = uint32_t((slices << kSliceShift) - header);
      check_block_start_test(bytes, 1, bytes);
    }
  }
}

TEST_CASE("huge blocks of random sizes and alignments keep their bytes through reuse and realloc") {
  // Huge mappings are cached, split, rejoined and grown in place or moved;
  // whatever path a request takes, the block must hold its bytes, be aligned
  // and end within a page of its size. Contents are written and checked at
  // every 64 KiB and at both ends (whole blocks would take minutes).
  constexpr size_t kMiB = size_t(1) << 20, kPage = 4096, kStep = 64 * 1024;
  auto mark = [](size_t i, uint8_t seed) { return uint8_t(seed + (i >> 12) * 31 + i); };
  auto spots = [&](size_t n, auto fn) {
    for (size_t i = 0; i < n; i += kStep) fn(i);
    for (size_t i = n > kPage ? n - kPage : 0; i < n; ++i) fn(i);
  };
  struct Live {
    uint8_t* p = nullptr;
    size_t n = 0;
    uint8_t seed = 0;
  };
  Live live[6];
  uint64_t r = 0x243f6a8885a308d3u;
  auto next = [&] {
    r ^= r << 13, r ^= r >> 7, r ^= r << 17;
    return r;
  };
  // The marked spots of b below `limit` (a block realloc shrank) hold their marks.
  auto intact = [&](const Live& b, size_t limit = ~size_t{0}) {
    size_t bad = 0;
    spots(b.n, [&](size_t i) { bad += i < limit && b.p[i] != mark(i, b.seed); });
    return bad == 0;
  };
  for (int it = 0; it < 600; ++it) {
    Live& b = live[next() % 6];
    size_t n = 2 * kMiB + next() % (18 * kMiB);
    unsigned op = unsigned(next() % 4);
    INFO("iteration " << it << ", op " << op << ", size " << n);
    bool reallocated = b.p && op == 3;
    if (reallocated) {
      REQUIRE(intact(b));
      auto* q = static_cast<uint8_t*>(gr_realloc(b.p, n));
      REQUIRE(q != nullptr);
      REQUIRE(intact(Live{q, b.n, b.seed}, n));
      b.p = q, b.n = n;
    } else {
      if (b.p) {
        REQUIRE(intact(b));
        gr_free(b.p);
      }
      size_t align = size_t(4096) << (next() % 12);  // 4 KiB .. 8 MiB
      if (op == 1) {
        b.p = static_cast<uint8_t*>(gr_calloc(1, n));
        REQUIRE(b.p != nullptr);
        size_t nonzero = 0;
        spots(gr_usable_size(b.p), [&](size_t i) { nonzero += b.p[i] != 0; });
        REQUIRE(nonzero == 0);
      } else {
        b.p = static_cast<uint8_t*>(op == 2 ? gr_aligned_alloc(align, n) : gr_malloc(n));
        REQUIRE(b.p != nullptr);
        if (op == 2) REQUIRE(uintptr_t(b.p) % align == 0);
      }
      b.n = n;
    }
    size_t usable = gr_usable_size(b.p);
    REQUIRE(usable >= b.n);
    // A new block ends within a page of its size (a realloc that fits keeps
    // the block it had, however big).
    if (!reallocated) REQUIRE(usable < b.n + kPage);
    b.seed = uint8_t(next());
    spots(b.n, [&](size_t i) { b.p[i] = mark(i, b.seed); });
  }
  for (Live& b : live) {
    if (!b.p) continue;
    REQUIRE(intact(b));
    gr_free(b.p);
  }
  gr_collect(true);
}
