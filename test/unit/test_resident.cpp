// What stays resident while free memory waits for its purge delay.
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "granule.h"
#include "helpers.h"

#if defined(__linux__)
#include <sys/resource.h>
#endif

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

size_t reserved() {
  gr_stats_t s;
  gr_stats_get(&s);
  return s.reserved;
}

// A block of n bytes written whole with `byte`, then freed: a huge one's
// mapping waits in the cache, resident. Where it was.
unsigned char* written_and_freed(size_t n, int byte) {
  auto* p = static_cast<unsigned char*>(gr_malloc(n));
  REQUIRE(p != nullptr);
  std::memset(p, byte, n);
  gr_free(p);
  return p;
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
    // A heap of its own: how much idle memory growth may keep depends on
    // what the heap holds, which for thread heaps is the whole process's.
    gr_heap_t* heap = gr_heap_create(nullptr);
    REQUIRE(heap != nullptr);
    // 48 small slabs, every second one emptied: idle resident slices, each
    // between two live ones, too short a run for anything bigger.
    std::vector<void*> keep;
    bool none_purged;
    {
      std::vector<void*> blocks;
      for (int i = 0; i < 48 * 64; ++i) {
        void* p = gr_heap_malloc(heap, 1000);
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
    void* big = gr_heap_malloc(heap, 1u << 20);
    REQUIRE(big != nullptr);
    std::memset(big, 2, 1u << 20);
    size_t s1 = committed();
    INFO("a 1 MiB span changed committed by " << (long long)(s1 - s0));
    REQUIRE(s1 < s0 + (256u << 10));
    // A fresh huge mapping takes the rest of them (about 0.5 MiB) but for a
    // 64th of the slices the heap holds: none of about 40.
    void* huge = gr_heap_malloc(heap, 8u << 20);
    REQUIRE(huge != nullptr);
    std::memset(huge, 3, 8u << 20);
    size_t s2 = committed();
    INFO("an 8 MiB block changed committed by " << (long long)(s2 - s1));
    REQUIRE(s2 < s1 + (8u << 20) - (256u << 10));
    gr_free(huge);
    gr_free(big);
    for (void* p : keep) gr_free(p);
    gr_heap_destroy(heap);
  });
}

TEST_CASE("a medium class whose live blocks swing across a slab boundary keeps its second slab") {
  // Between one slab's worth of 20000-byte blocks (12 to a slab of 4
  // slices) and two, freed in random order: the slab that empties while the
  // other holds blocks must wait for the next swing, not go back to be
  // replaced by a new one, whose blocks are carved (counted in
  // `allocations`) afresh.
  std::thread([] {
    constexpr size_t kSize = 20000;
    std::vector<void*> live;
    uint64_t x = 12345;
    auto step = [&] {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      if (live.size() < 6 || (live.size() < 20 && (x & 1))) {
        void* p = gr_malloc(kSize);
        REQUIRE(p != nullptr);
        live.push_back(p);
      } else {
        size_t i = (x >> 8) % live.size();
        gr_free(live[i]);
        live[i] = live.back();
        live.pop_back();
      }
    };
    for (int i = 0; i < 2000; ++i) step();
    gr_stats_t before, after;
    gr_stats_get(&before);
    for (int i = 0; i < 20000; ++i) step();
    gr_stats_get(&after);
    for (void* p : live) gr_free(p);
    INFO("blocks carved while swinging: " << after.allocations - before.allocations);
    CHECK(after.allocations - before.allocations < 24);
  }).join();
}

#if defined(__linux__) && !defined(GRANULE_SECURE)  // hardened spans carry guard pages
#include <sys/mman.h>

namespace {
constexpr size_t kSlice = 64 * 1024;  // the slice size the tests count in
long thread_minor_faults() {
  rusage u{};
  getrusage(RUSAGE_THREAD, &u);
  return u.ru_minflt;
}
// Whether the page at p is resident.
bool resident(const void* p) {
  unsigned char v = 0;
  REQUIRE(mincore(const_cast<void*>(p), 4096, &v) == 0);
  return (v & 1) != 0;
}
}  // namespace

TEST_CASE("a medium slab too big for the resident free runs takes a short one there") {
  // Buffers of ever new medium sizes, one at a time (an interpreter reading
  // its files): each class keeps its empty slab until two newer ones are
  // empty, then gives it back. Those pages should serve the next size even
  // when they are too few for a whole slab of it.
  with_purge_delay(60 * 1000, [] {
    // Slabs of 2, 4 and 4 slices.
    for (size_t n : {size_t(16384), size_t(20480), size_t(22528)}) {
      void* p = gr_malloc(n);
      REQUIRE(p != nullptr);
      std::memset(p, 1, n);
      gr_free(p);
    }
    // 26 KiB blocks come in slabs of 3 slices; the 16 KiB slab, given back
    // now, leaves a resident run of 2 at least. A whole slab would take
    // fresh slices unless some other resident run is long enough.
    size_t before = committed();
    void* p = gr_malloc(26000);
    REQUIRE(p != nullptr);
    std::memset(p, 2, 26000);
    CHECK(committed() <= before);
    gr_free(p);
  });
}

TEST_CASE("a span that must fault pages in takes the free run that needs fewest") {
  with_purge_delay(60 * 1000, [] {
    // A heap of its own: its segment holds only these spans, side by side.
    gr_heap_t* heap = gr_heap_create(nullptr);
    REQUIRE(heap != nullptr);
    void* a = gr_heap_malloc(heap, 20 * kSlice);
    void* b = gr_heap_malloc(heap, 10 * kSlice);
    void* c = gr_heap_malloc(heap, 5 * kSlice);
    REQUIRE((a && b && c));
    std::memset(a, 1, 20 * kSlice);
    std::memset(b, 2, 10 * kSlice);
    std::memset(c, 3, 5 * kSlice);
    // a's slices decommitted, b's still resident: one free run of 30, two
    // thirds fresh, and fresh slices past c.
    gr_free(a);
    gr_collect(true);
    gr_free(b);
    long before = thread_minor_faults();
    void* d = gr_heap_malloc(heap, 25 * kSlice);
    REQUIRE(d != nullptr);
    std::memset(d, 4, 25 * kSlice);
    long faults = thread_minor_faults() - before;
    // The run ending with b's 10 resident slices faults in 15 slices; the
    // first fit (starting at a) faulted in 20, the run past c 25.
    long per_slice = long(kSlice) / sysconf(_SC_PAGESIZE);
    INFO(faults << " page faults, " << per_slice << " per slice");
    REQUIRE(faults <= 17 * per_slice);
    gr_heap_destroy(heap);
  });
}

TEST_CASE("growth keeps slices freed a moment ago up to a 64th of the heap, and no more") {
  constexpr size_t kMiB = size_t{1} << 20;
  with_purge_delay(60 * 1000, [&] {
    gr_heap_t* heap = gr_heap_create(nullptr);
    REQUIRE(heap != nullptr);
    std::vector<void*> spans;
    for (int i = 0; i < 96; ++i) {
      void* p = gr_heap_malloc(heap, kMiB);
      REQUIRE(p != nullptr);
      std::memset(p, 1, kMiB);
      spans.push_back(p);
    }
    // Spans of 1.5 MiB fit none of the 1 MiB holes: each takes fresh slices.
    auto grow = [&](int n) {
      size_t before = committed();
      for (int i = 0; i < n; ++i) {
        void* p = gr_heap_malloc(heap, kMiB + kMiB / 2);
        REQUIRE(p != nullptr);
        std::memset(p, 2, kMiB + kMiB / 2);
        spans.push_back(p);
      }
      return committed() - before;
    };
    // 1 MiB idle of about 96 MiB held (a 64th is 1.5 MiB): kept, as a
    // program freeing and growing again in rounds would take it back at once.
    gr_free(spans[0]);
    spans[0] = nullptr;
    size_t grew = grow(1);
    INFO("with 1 MiB idle, 1.5 MiB of growth committed " << grew);
    REQUIRE(grew >= kMiB + kMiB / 2);
    // 8 MiB idle more: all but about 1.5 MiB of it offsets the next 6 MiB.
    for (int i = 1; i <= 8; ++i) {
      gr_free(spans[size_t(i) * 2]);
      spans[size_t(i) * 2] = nullptr;
    }
    grew = grow(4);
    INFO("with 9 MiB idle, 6 MiB of growth committed " << grew);
    REQUIRE(grew < kMiB);
    gr_heap_destroy(heap);
  });
}

TEST_CASE("memory that grows gives back the slices idle longest first") {
  constexpr long kDelay = 6400;
  with_purge_delay(kDelay, [&] {
    gr_heap_t* heap = gr_heap_create(nullptr);
    REQUIRE(heap != nullptr);
    // young, live, old, live: two free runs of six slices once freed, the
    // younger at the lower address.
    char* young = static_cast<char*>(gr_heap_malloc(heap, 6 * kSlice));
    void* g1 = gr_heap_malloc(heap, 3 * kSlice);  // past the medium classes: a span
    char* old = static_cast<char*>(gr_heap_malloc(heap, 6 * kSlice));
    void* g2 = gr_heap_malloc(heap, 3 * kSlice);
    REQUIRE((young && g1 && old && g2));
    std::memset(young, 1, 6 * kSlice);
    std::memset(old, 2, 6 * kSlice);
    gr_free(old);
    // Past an eighth of the delay (a tier growth gives back before slices
    // freed a moment ago), short of the quarter after which time alone
    // would purge it.
    std::this_thread::sleep_for(std::chrono::milliseconds(kDelay / 8 + kDelay / 16));
    gr_free(young);
    // Seven fresh slices (the free runs are too short): seven idle ones go.
    void* d = gr_heap_malloc(heap, 7 * kSlice);
    REQUIRE(d != nullptr);
    std::memset(d, 3, 7 * kSlice);
    bool old_kept = resident(old + 6 * kSlice - 4096);
    bool young_kept = resident(young + 6 * kSlice - 4096);
    INFO("old run's last page resident: " << old_kept << ", young run's: " << young_kept);
    REQUIRE(!old_kept);
    REQUIRE(young_kept);
    gr_heap_destroy(heap);
  });
}

TEST_CASE("free slices wait longer once they come back after their wait, the shortest when idle") {
  // Waits of 100, 200, 400 and 800 ms; a heap that took no slice for 400 ms
  // is idle.
  constexpr long kDelay = 400;
  using ms = std::chrono::milliseconds;
  with_purge_delay(kDelay, [&] {
    gr_heap_t* heap = gr_heap_create(nullptr);
    REQUIRE(heap != nullptr);
    // A live block keeps the segment, so each span takes back the slices
    // the last one left.
    void* pin = gr_heap_malloc(heap, 64);
    REQUIRE(pin != nullptr);
    // A span of 20 slices (more than the evidence a level asks for) written
    // whole and freed; `wait` later, is its last page still resident? The
    // collect right after the free has the heap see its last take then.
    auto kept_after = [&](long wait) {
      char* p = static_cast<char*>(gr_heap_malloc(heap, 20 * kSlice));
      REQUIRE(p != nullptr);
      std::memset(p, 1, 20 * kSlice);
      gr_free(p);
      gr_collect(false);
      std::this_thread::sleep_for(ms(wait));
      gr_collect(false);
      return resident(p + 20 * kSlice - 4096);
    };
    // Each time the purged span comes back (more than half of what was
    // purged): the wait doubles, to 200, 400 and 800 ms.
    REQUIRE_FALSE(kept_after(150));
    REQUIRE_FALSE(kept_after(300));
    REQUIRE_FALSE(kept_after(600));
    // Busy (the last take 300 ms ago): the 800 ms wait keeps the span.
    REQUIRE(kept_after(300));
    // Idle for 500 ms: the shortest wait, whatever the level.
    REQUIRE_FALSE(kept_after(500));
    gr_free(pin);
    gr_heap_destroy(heap);
  });
}
#endif

TEST_CASE("a huge block a bigger one outgrew goes back at once; a same-size one stays cached") {
  constexpr size_t kOld = 16u << 20;
  with_purge_delay(6400, [&] {
    gr_free(gr_malloc(8));  // the thread heap exists before counting
    gr_collect(true);
    size_t base = reserved();
    // Double buffering: the next buffer is allocated before the last one is
    // freed, at the same size. The old one waits in the cache for reuse.
    auto* a = static_cast<char*>(gr_malloc(kOld));
    REQUIRE(a != nullptr);
    std::memset(a, 1, kOld);
    auto* b = static_cast<char*>(gr_malloc(kOld));
    REQUIRE(b != nullptr);
    std::memcpy(b, a, kOld);
    gr_free(a);
    gr_collect(false);
    REQUIRE(reserved() >= base + 2 * kOld);
    gr_free(b);
    gr_collect(true);
    REQUIRE(reserved() == base);
    // A vector growing: the new buffer is twice the size and fresh. The old
    // copy is due at once, so the next pass returns it.
    a = static_cast<char*>(gr_malloc(kOld));
    REQUIRE(a != nullptr);
    std::memset(a, 2, kOld);
    auto* c = static_cast<char*>(gr_malloc(2 * kOld));
    REQUIRE(c != nullptr);
    std::memcpy(c, a, kOld);
    gr_free(a);
    gr_collect(false);
    size_t after = reserved();
    REQUIRE(after >= base + 2 * kOld);
    REQUIRE(after < base + 3 * kOld);
    REQUIRE(c[kOld - 1] == 2);
    gr_free(c);
    gr_collect(true);
  });
}

TEST_CASE("calloc of reused memory reads zero and faults in only what the last user touched") {
  with_purge_delay(60 * 1000, [] {
    for (size_t n : {size_t(300) << 10, size_t(1536) << 10, size_t(16) << 20}) {
      INFO("size " << n);
      gr_collect(true);  // nothing resident waits: the block comes fresh
      // Sparse: a byte every 64 pages. Zeroing must not write every page.
      auto* p = static_cast<unsigned char*>(gr_malloc(n));
      REQUIRE(p != nullptr);
      for (size_t i = 0; i < n; i += 64 * 4096) p[i] = 0xcd;
      p[n - 1] = 0xcd;
      gr_free(p);
      size_t before = rss_bytes();
      auto* q = static_cast<unsigned char*>(gr_calloc(1, n));
      REQUIRE(q != nullptr);
      size_t after = rss_bytes();
#if defined(__linux__)  // Windows writes every page (os::zero)
      if (n >= (size_t(1) << 20)) CHECK(after < before + n / 4);
#endif
      (void)before, (void)after;
      size_t nonzero = 0;
      for (size_t i = 0; i < n; ++i) nonzero += q[i] != 0;
      REQUIRE(nonzero == 0);
      gr_free(q);
      // Dense: every byte was written.
      p = static_cast<unsigned char*>(gr_malloc(n));
      REQUIRE(p != nullptr);
      std::memset(p, 0xab, n);
      gr_free(p);
      q = static_cast<unsigned char*>(gr_calloc(1, n));
      REQUIRE(q != nullptr);
      for (size_t i = 0; i < n; ++i) nonzero += q[i] != 0;
      REQUIRE(nonzero == 0);
      gr_free(q);
    }
  });
}

TEST_CASE("a huge block is its size rounded to a page: calloc zeroes it, realloc grows in place") {
  constexpr size_t kMiB = size_t(1) << 20, kPage = 4096;
  with_purge_delay(60 * 1000, [] {
    // A bigger block written whole leaves its pages cached for reuse.
    written_and_freed(12 * kMiB, 0xff);
    auto* c = static_cast<unsigned char*>(gr_calloc(1, 5 * kMiB + 100));
    REQUIRE(c != nullptr);
    size_t usable = gr_usable_size(c);
    CHECK(usable >= 5 * kMiB + 100);
    CHECK(usable <= 5 * kMiB + kPage);
    size_t nonzero = 0;
    for (size_t i = 0; i < usable; ++i) nonzero += c[i] != 0;
    REQUIRE(nonzero == 0);
    // Growing within the mapping keeps the block where it is.
    for (size_t i = 0; i < usable; i += 4096) c[i] = static_cast<unsigned char>(i >> 12);
    auto* g = static_cast<unsigned char*>(gr_realloc(c, 6 * kMiB));
    REQUIRE(g != nullptr);
#if !defined(GRANULE_SECURE)  // hardened mappings end at the block, then a guard page
    CHECK(g == c);
#endif
    CHECK(gr_usable_size(g) >= 6 * kMiB);
    size_t wrong = 0;
    for (size_t i = 0; i < usable; i += 4096) wrong += g[i] != static_cast<unsigned char>(i >> 12);
    CHECK(wrong == 0);
    std::memset(g, 1, 6 * kMiB);
    gr_free(g);
  });
}

// (Hardened: cached huge blocks give their pages back.)
#if defined(__linux__) && !defined(GRANULE_SECURE)
TEST_CASE("huge blocks that grow a little each time reuse cached pages instead of faulting") {
  with_purge_delay(60 * 1000, [&] {
    gr_collect(true);
    // One block at a time, 3 MiB to 12 MiB a megabyte apart, written whole:
    // a file read into a buffer sized to it, one file after another.
    long last_round = 0;
    for (int round = 0; round < 3; ++round) {
      long before = thread_minor_faults();
      for (size_t mib = 3; mib <= 12; ++mib) {
        auto* p = static_cast<char*>(gr_malloc(mib << 20));
        REQUIRE(p != nullptr);
        std::memset(p, int(mib), mib << 20);
        gr_free(p);
      }
      last_round = thread_minor_faults() - before;
    }
    // The first round faults in 12 MiB; later ones find it all cached (the
    // way it was: a megabyte fresh at every step past the biggest piece).
    INFO("faults in the last round: " << last_round);
    CHECK(last_round < 256);
  });
}
#endif

#if defined(__linux__) && !defined(GRANULE_SECURE)
TEST_CASE("a huge block cut from a bigger cached one joins it again when freed") {
  constexpr size_t kMiB = size_t(1) << 20;
  with_purge_delay(60 * 1000, [] {
    gr_collect(true);
    auto* big = written_and_freed(12 * kMiB, 1);
    size_t mapped = reserved();
    // Smaller blocks of every size are cut from it and rejoin it when freed,
    // so it keeps serving them, and the big one again, at the same address.
    for (size_t mib = 4; mib <= 12; ++mib) {
      INFO(mib << " MiB");
      auto* p = static_cast<unsigned char*>(gr_malloc(mib * kMiB));
      REQUIRE(p == big);
      std::memset(p, 2, mib * kMiB);
      gr_free(p);
      CHECK(reserved() == mapped);
    }
    gr_collect(true);
  });
}

TEST_CASE("the idle part a freed huge block joined goes back on its own time") {
  constexpr size_t kMiB = size_t(1) << 20;
  with_purge_delay(100, [] {
    gr_collect(true);
    auto* big = written_and_freed(12 * kMiB, 1);
    size_t whole = committed();
    // A 4 MiB block cut from it, used again and again for three delays: its
    // part stays cached, the 8 MiB past it has been idle all along.
    auto start = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - start < std::chrono::milliseconds(300)) {
      auto* p = static_cast<unsigned char*>(gr_malloc(4 * kMiB));
      REQUIRE(p == big);
      std::memset(p, 2, 4 * kMiB);
      gr_free(p);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    gr_collect(false);
    INFO("committed " << whole << " -> " << committed());
    CHECK(committed() + 6 * kMiB <= whole);
    auto* p = static_cast<unsigned char*>(gr_malloc(4 * kMiB));
    CHECK(p == big);
    gr_free(p);
    gr_collect(true);
  });
}
#endif

// (Hardened: a freed span's pages go back at once, by design.)
#if defined(__linux__) && !defined(GRANULE_SECURE)
TEST_CASE("spans of mixed sizes churned at a steady size keep their pages resident") {
  with_purge_delay(10 * 1000, [&] {
    gr_collect(true);
    // Sixteen live spans of 128-256 KiB, each replaced by one of another
    // size: the free runs are resident but often too short for the next
    // span, so some slices come fresh. The live size stays the same, so
    // dropping recently freed slices to offset them only faults those back
    // in at the next span.
    void* live[16] = {};
    uint64_t r = 1;
    long before = 0;
    constexpr int kRounds = 20000;
    for (int i = 0; i < kRounds; ++i) {
      if (i == kRounds / 2) before = thread_minor_faults();
      r = r * 6364136223846793005u + 1442695040888963407u;
      size_t k = (r >> 33) % 16, n = (size_t(128) << 10) + (r >> 40) % (size_t(128) << 10);
      gr_free(live[k]);
      live[k] = gr_malloc(n);
      REQUIRE(live[k] != nullptr);
      std::memset(live[k], 1, n);
    }
    long steady = thread_minor_faults() - before;
    for (void* p : live) gr_free(p);
    INFO("page faults over the last " << kRounds / 2 << " spans: " << steady);
    CHECK(steady < kRounds / 20);
  });
}
#endif
