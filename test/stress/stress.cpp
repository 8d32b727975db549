// Multithreaded stress: waves of threads are created and destroyed; each
// swaps freshly allocated blocks into shared slots and frees what it takes
// out, so blocks migrate between threads (and outlive the thread that made
// them); one allocation in 32 comes from a first-class heap of the thread's
// own, destroyed whole now and then. Every block carries a cookie over its
// whole contents, checked before it is freed, and a collector thread runs
// gr_collect(true) all the while. Usage: stress [WAVES] [THREADS] [OPS]
// Exits non-zero on the first damaged block. Calls gr_* directly, so the
// same source builds against the core for ThreadSanitizer.
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <utility>
#include <vector>

#include "granule.h"

namespace {

constexpr size_t kSlots = 4096;
std::atomic<uint8_t*> g_slots[kSlots];
std::atomic<bool> g_failed{false};

uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return x;
}

// The first 8 bytes hold the size; the rest a pattern of address and size.
uint8_t cookie(const uint8_t* p, size_t size, size_t i) {
  return uint8_t(mix(uintptr_t(p) ^ size) >> (i % 7 * 8)) ^ uint8_t(i);
}

template <class Fn>
void for_checked(size_t n, Fn fn) {
  if (n <= 65536) {
    for (size_t i = 8; i < n; ++i) fn(i);
    return;
  }
  for (size_t i = 8; i < 4096; ++i) fn(i);
  for (size_t i = n - 4096; i < n; ++i) fn(i);
}

void stamp(uint8_t* p, size_t size) {
  *reinterpret_cast<uint64_t*>(p) = size;
  for_checked(size, [&](size_t i) { p[i] = cookie(p, size, i); });
}

size_t check(uint8_t* p) {
  size_t size = *reinterpret_cast<uint64_t*>(p);
  bool ok = size >= 8 && gr_usable_size(p) >= size;
  if (ok) for_checked(size, [&](size_t i) { ok = ok && p[i] == cookie(p, size, i); });
  if (!ok) {
    std::fprintf(stderr, "stress: damaged block %p (size %zu)\n", static_cast<void*>(p), size);
    g_failed.store(true);
  }
  return size;
}

void check_and_free(uint8_t* p) {
  size_t size = check(p);
  if (size & 1)
    gr_free_sized(p, size);
  else
    gr_free(p);
}

size_t pick_size(uint64_t r) {
  unsigned k = unsigned(r % 1000);
  if (k < 700) return 8 + (r >> 10) % 256;
  if (k < 950) return 8 + (r >> 10) % 8192;
  if (k < 998) return 8 + (r >> 10) % (256 * 1024);
  // Huge: its own mapping. Sizes of one to four segments, so cached
  // mappings are split for smaller blocks and rejoined as those are freed.
  return (3u << 20) + (r >> 10) % (12u << 20);
}

// A first-class heap of the thread's own, made and destroyed whole every
// 128 allocations (with some of its blocks still in it) while other threads
// allocate and the collector runs: heap objects are reused meanwhile.
struct OwnHeap {
  gr_heap_t* heap = nullptr;
  std::vector<uint8_t*> kept;
  unsigned made = 0;

  bool alloc(uint64_t r, size_t size) {
    if (!heap && !(heap = gr_heap_create(nullptr))) return false;
    auto* p = static_cast<uint8_t*>(gr_heap_malloc(heap, size));
    if (!p) return false;
    stamp(p, size);
    if (kept.size() < 16) {
      kept.push_back(p);
    } else {
      std::swap(kept[(r >> 24) % kept.size()], p);
      check_and_free(p);
    }
    if (++made % 128 == 0) destroy();
    return true;
  }
  void destroy() {
    for (uint8_t* p : kept) check(p);
    kept.clear();
    if (heap) gr_heap_destroy(heap);
    heap = nullptr;
  }
};

void worker(unsigned id, unsigned ops) {
  uint64_t r = mix(id * 7919 + 1);
  std::vector<uint8_t*> own;  // a few blocks this thread keeps and reallocs
  OwnHeap own_heap;
  for (unsigned i = 0; i < ops && !g_failed.load(std::memory_order_relaxed); ++i) {
    r = mix(r + i);
    size_t size = pick_size(r);
    if ((r >> 40) % 32 == 0) {
      if (!own_heap.alloc(r, size)) {
        std::fprintf(stderr, "stress: first-class heap allocation of %zu failed\n", size);
        g_failed.store(true);
        return;
      }
      continue;
    }
    auto* p = static_cast<uint8_t*>((r & 3) == 0 ? gr_calloc(1, size) : gr_malloc(size));
    if (!p) {
      std::fprintf(stderr, "stress: allocation of %zu failed\n", size);
      g_failed.store(true);
      return;
    }
    stamp(p, size);
    if ((r >> 20) % 16 == 0) {
      // Grow one kept block in place or by moving it; its cookie moves too.
      if (own.size() < 8) {
        own.push_back(p);
        continue;
      }
      uint8_t*& q = own[(r >> 24) % own.size()];
      size_t old = *reinterpret_cast<uint64_t*>(q);
      size_t grown = old + (r >> 30) % 2048;
      uint8_t head[8] = {};
      for (size_t k = 8; k < 16 && k < old; ++k) head[k - 8] = q[k];
      auto* moved = static_cast<uint8_t*>(gr_realloc(q, grown));
      bool same = moved != nullptr;
      for (size_t k = 8; same && k < 16 && k < old; ++k) same = moved[k] == head[k - 8];
      if (!same) {
        std::fprintf(stderr, "stress: realloc lost contents\n");
        g_failed.store(true);
        return;
      }
      q = moved;
      stamp(q, grown);
      check_and_free(p);
      continue;
    }
    uint8_t* old = g_slots[(r >> 12) % kSlots].exchange(p, std::memory_order_acq_rel);
    if (old) check_and_free(old);
  }
  for (uint8_t* q : own) check_and_free(q);
  own_heap.destroy();
}

}  // namespace

int main(int argc, char** argv) {
  unsigned waves = argc > 1 ? unsigned(std::atoi(argv[1])) : 20;
  unsigned threads = argc > 2 ? unsigned(std::atoi(argv[2])) : 4;
  unsigned ops = argc > 3 ? unsigned(std::atoi(argv[3])) : 20000;
  unsigned id = 0;
  for (unsigned w = 0; w < waves && !g_failed.load(); ++w) {
    std::vector<std::thread> ts;
    for (unsigned t = 0; t < threads; ++t) ts.emplace_back(worker, id++, ops);
    // Meanwhile a collector keeps taking the frees the workers hold back for
    // other threads, whenever one is between two of them.
    std::atomic<bool> done{false};
    std::thread collector([&] {
      while (!done.load()) {
        gr_collect(true);
        std::this_thread::yield();
      }
    });
    for (auto& t : ts) t.join();
    done.store(true);
    collector.join();
  }
  for (auto& s : g_slots)
    if (uint8_t* p = s.exchange(nullptr)) check_and_free(p);
  gr_collect(true);
  gr_stats_t st;
  gr_stats_get(&st);
  std::printf("stress: %u waves x %u threads x %u ops, %s; in use at end %zu bytes, %zu huge\n",
              waves, threads, ops, g_failed.load() ? "FAILED" : "all blocks intact", st.in_use,
              st.huge_blocks);
  return g_failed.load() || st.huge_blocks != 0 ? 1 : 0;
}
