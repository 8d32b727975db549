// Process-wide counters kept by the slow paths (OS calls, segments, huge
// blocks). Per-block numbers are computed on demand from the heaps, so the
// fast paths count nothing.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace granule {

struct Counter {
  std::atomic<size_t> current{0};
  std::atomic<size_t> peak{0};
  void add(size_t n) {
    size_t now = current.fetch_add(n, std::memory_order_relaxed) + n;
    size_t p = peak.load(std::memory_order_relaxed);
    while (now > p && !peak.compare_exchange_weak(p, now, std::memory_order_relaxed)) {
    }
  }
  void sub(size_t n) { current.fetch_sub(n, std::memory_order_relaxed); }
  size_t get() const { return current.load(std::memory_order_relaxed); }
};

struct GlobalStats {
  Counter reserved, committed, segments, huge_blocks, huge_bytes;
  std::atomic<size_t> in_use_peak_hint{0};  // highest in_use seen by gr_stats_get
  std::atomic<uint64_t> os_reserves{0}, os_releases{0}, os_commits{0}, os_decommits{0};
  std::atomic<uint64_t> purges{0};
};

extern GlobalStats g_stats;

inline void bump(std::atomic<uint64_t>& c) { c.fetch_add(1, std::memory_order_relaxed); }

}  // namespace granule
