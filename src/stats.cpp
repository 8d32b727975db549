// gr_stats_*: process counters plus a walk over every heap's segments,
// done on demand so the fast paths count nothing.
#include "stats.h"

#include <cstring>

#include "granule.h"
#include "heap.h"
#include "report.h"
#include "segment.h"

namespace granule {
GlobalStats g_stats;
}

using namespace granule;

namespace {

void walk_heaps(gr_stats_t* st) {
  // Statistics at exit on Windows: a thread killed by ExitProcess may hold
  // the lock for good; its threads gone, the heap is read without it.
  const bool exiting = os::process_exiting();
  auto walk = [&](Heap* h) {
    const bool locked = exiting ? h->lock.try_lock() : (h->lock.lock(), true);
    segment_for_each(h, [&](Segment* seg) {
      for (unsigned i = 0; i < kSlicesPerSegment; ++i) {
        const Slab& s = seg->slabs[i];
        if (s.kind != SliceKind::kSlab && s.kind != SliceKind::kLarge) continue;
        // Racy for attached slabs of running threads: a snapshot, not a ledger.
        uint64_t w = s.remote.load(std::memory_order_relaxed);
        size_t live;
        if (remote_state(w) == kAttached)
          live = s.used >= remote_count(w) ? s.used - remote_count(w) : 0;
        else if (remote_detached(w))
          live = s.capacity - remote_count(w);
        else
          live = 0;
        st->in_use += live * s.block_size;
        if (s.kind == SliceKind::kSlab && s.size_class < GR_STATS_CLASSES) {
          st->class_live[s.size_class] += live;
        }
      }
    });
    if (locked) h->lock.unlock();
  };
  heap_for_each([&](Heap* h) {
    if (h->state.load(std::memory_order_acquire) == HeapState::kDestroyed) return;
    st->heaps += h->state.load(std::memory_order_relaxed) == HeapState::kLive;
    st->allocations += h->blocks_handed;
    walk(h);
  });
  walk(&g_thread_segments);
}

}  // namespace

extern "C" {

void gr_stats_get(gr_stats_t* out) {
  if (!out) return;
  gr_stats_t st;
  std::memset(&st, 0, sizeof st);
  st.reserved = g_stats.reserved.get();
  st.committed = g_stats.committed.get();
  st.peak_reserved = g_stats.reserved.peak.load(std::memory_order_relaxed);
  st.peak_committed = g_stats.committed.peak.load(std::memory_order_relaxed);
  st.segments = g_stats.segments.get();
  st.huge_blocks = g_stats.huge_blocks.get();
  st.purges = g_stats.purges.load(std::memory_order_relaxed);
  st.os_reserves = g_stats.os_reserves.load(std::memory_order_relaxed);
  st.os_releases = g_stats.os_releases.load(std::memory_order_relaxed);
  st.os_commits = g_stats.os_commits.load(std::memory_order_relaxed);
  st.os_decommits = g_stats.os_decommits.load(std::memory_order_relaxed);
  st.class_count = kClassCount;
  for (unsigned c = 0; c < kClassCount; ++c) st.class_size[c] = class_block_size(c);
  walk_heaps(&st);
  // Huge blocks are counted by their mappings.
  st.in_use += g_stats.huge_bytes.get();
  st.peak_in_use = g_stats.in_use_peak_hint.load(std::memory_order_relaxed);
  if (st.in_use > st.peak_in_use) {
    g_stats.in_use_peak_hint.store(st.in_use, std::memory_order_relaxed);
    st.peak_in_use = st.in_use;
  }
  if (st.peak_in_use > st.peak_committed) st.peak_in_use = st.peak_committed;
  *out = st;
}

size_t gr_stats_json(char* buf, size_t size) {
  gr_stats_t st;
  gr_stats_get(&st);
  size_t n = format(buf, size,
                    "{\"reserved\":%zu,\"committed\":%zu,\"in_use\":%zu,\"peak_reserved\":%zu,"
                    "\"peak_committed\":%zu,\"peak_in_use\":%zu,\"segments\":%zu,"
                    "\"huge_blocks\":%zu,\"heaps\":%zu,\"allocations\":%llu,\"purges\":%llu,"
                    "\"os_reserves\":%llu,\"os_releases\":%llu,\"os_commits\":%llu,"
                    "\"os_decommits\":%llu,\"classes\":[",
                    st.reserved, st.committed, st.in_use, st.peak_reserved, st.peak_committed,
                    st.peak_in_use, st.segments, st.huge_blocks, st.heaps,
                    (unsigned long long)st.allocations, (unsigned long long)st.purges,
                    (unsigned long long)st.os_reserves, (unsigned long long)st.os_releases,
                    (unsigned long long)st.os_commits, (unsigned long long)st.os_decommits);
  for (size_t c = 0; c < st.class_count; ++c) {
    n += format(n < size ? buf + n : nullptr, n < size ? size - n : 0,
                "%s{\"size\":%zu,\"live\":%zu}", c ? "," : "", st.class_size[c], st.class_live[c]);
  }
  n += format(n < size ? buf + n : nullptr, n < size ? size - n : 0, "]}");
  return n;
}

void gr_stats_print(void) {
  gr_stats_t st;
  gr_stats_get(&st);
  char line[256];
  auto out = [&](const char* fmt, auto... args) {
    size_t n = format(line, sizeof line, fmt, args...);
    os::write_stderr(line, n < sizeof line ? n : sizeof line - 1);
  };
  constexpr size_t kKiB = 1024;
  out("granule: stats (pid %u)\n", os::process_id());
  out("  reserved   %zu KiB (peak %zu KiB)\n", st.reserved / kKiB, st.peak_reserved / kKiB);
  out("  committed  %zu KiB (peak %zu KiB)\n", st.committed / kKiB, st.peak_committed / kKiB);
  out("  in use     %zu KiB (highest seen by gr_stats_get %zu KiB)\n", st.in_use / kKiB,
      st.peak_in_use / kKiB);
  out("  allocations %llu, segments %zu, huge blocks %zu, heaps %zu\n",
      (unsigned long long)st.allocations, st.segments, st.huge_blocks, st.heaps);
  out("  os: %llu reserves, %llu releases, %llu commits, %llu decommits; %llu purges\n",
      (unsigned long long)st.os_reserves, (unsigned long long)st.os_releases,
      (unsigned long long)st.os_commits, (unsigned long long)st.os_decommits,
      (unsigned long long)st.purges);
  for (size_t c = 0; c < st.class_count; ++c) {
    if (st.class_live[c]) out("  class %zu B: %zu live\n", st.class_size[c], st.class_live[c]);
  }
}

}  // extern "C"
