// The hardened build's layout promises (GRANULE_SECURE); the default build
// skips these.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <set>
#include <thread>
#include <vector>

#include "config.h"
#include "granule.h"

namespace {

size_t mapping_count() {
  FILE* f = std::fopen("/proc/self/maps", "r");
  size_t n = 0;
  for (int c; (c = std::fgetc(f)) != EOF;) n += c == '\n';
  std::fclose(f);
  return n;
}

// True when the child running fn dies of SIGSEGV.
template <class Fn>
bool faults(Fn fn) {
  pid_t pid = fork();
  if (pid == 0) {
    fn();
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV;
}

}  // namespace

TEST_CASE("hardened: the canary takes the last bytes of a block") {
  if constexpr (!granule::kSecure) return;
  void* p = gr_malloc(24);
  REQUIRE(gr_usable_size(p) == 24);
  gr_free(p);
  REQUIRE(gr_usable_size(p) == 0);  // not live any more
}

TEST_CASE("hardened: freed blocks hold the fill, not their old contents") {
  if constexpr (!granule::kSecure) return;
  std::vector<unsigned char*> blocks;
  for (int i = 0; i < 100; ++i) {
    auto* p = static_cast<unsigned char*>(gr_malloc(200));
    std::memset(p, 0x5a, gr_usable_size(p));
    blocks.push_back(p);
  }
  gr_free(blocks[50]);
  for (size_t i = 8; i < 200; ++i) REQUIRE(blocks[50][i] != 0x5a);
  for (size_t i = 0; i < blocks.size(); ++i)
    if (i != 50) gr_free(blocks[i]);
}

TEST_CASE("hardened: blocks freed by another thread are dead, filled, and come back intact") {
  if constexpr (!granule::kSecure) return;
  std::vector<unsigned char*> blocks;
  for (int i = 0; i < 300; ++i) {
    auto* p = static_cast<unsigned char*>(gr_malloc(100));
    std::memset(p, 0x5a, gr_usable_size(p));
    blocks.push_back(p);
  }
  // Freed remotely: onto the owner's remote list, marked, not yet collected.
  std::thread([&] {
    for (auto* p : blocks) gr_free(p);
  }).join();
  for (auto* p : blocks) {
    REQUIRE(gr_usable_size(p) == 0);
    for (size_t i = 16; i < 100; ++i) REQUIRE(p[i] != 0x5a);
  }
  // The owner collects them (clearing their bits and marks) and reuses them:
  // no false report, every block distinct and whole.
  std::vector<unsigned char*> again;
  std::set<unsigned char*> seen;
  for (int i = 0; i < 600; ++i) {
    auto* p = static_cast<unsigned char*>(gr_malloc(100));
    REQUIRE(gr_usable_size(p) >= 100);
    REQUIRE(seen.insert(p).second);
    std::memset(p, 0x33, 100);
    again.push_back(p);
  }
  for (auto* p : again) gr_free(p);
}

TEST_CASE("hardened: allocation order within a slab is not address order") {
  if constexpr (!granule::kSecure) return;
  std::vector<uintptr_t> order;
  for (int i = 0; i < 200; ++i) order.push_back(uintptr_t(gr_malloc(48)));
  size_t ascending = 0;
  for (size_t i = 1; i < order.size(); ++i) ascending += order[i] > order[i - 1];
  // Sequential carving would make (nearly) every step ascending.
  REQUIRE(ascending < order.size() * 3 / 4);
  for (uintptr_t p : order) gr_free(reinterpret_cast<void*>(p));
}

TEST_CASE("hardened: guard pages end huge blocks and segments") {
  if constexpr (!granule::kSecure) return;
  auto* huge = static_cast<char*>(gr_malloc(5u << 20));
  size_t n = gr_usable_size(huge);
  REQUIRE(n >= (5u << 20));
  REQUIRE_FALSE(faults([&] { huge[n - 1] = 1; }));
  REQUIRE(faults([&] { huge[n] = 1; }));
  // A span at the top of its segment runs into the segment's last page.
  std::vector<char*> spans;
  // 21 slices each: three fill slices 1..63 of a segment exactly.
  for (int i = 0; i < 9; ++i) spans.push_back(static_cast<char*>(gr_malloc(21 * 65536 - 8192)));
  bool some_span_guarded = false;
  for (char* s : spans) {
    size_t u = gr_usable_size(s);
    if (((uintptr_t(s) + u + granule::kGuardSize) & granule::kSegmentMask) == 0) {
      some_span_guarded = true;
      REQUIRE(faults([&] { s[u + 100] = 1; }));
    }
  }
  REQUIRE(some_span_guarded);
  for (char* s : spans) gr_free(s);
  gr_free(huge);
}

TEST_CASE("hardened: guard pages keep the mapping count bounded") {
  if constexpr (!granule::kSecure) return;
  gr_stats_t before_stats, after_stats;
  gr_stats_get(&before_stats);
  size_t before = mapping_count();
  std::vector<void*> blocks;
  for (int i = 0; i < 300; ++i) blocks.push_back(gr_malloc(1u << 20));  // large spans
  for (int i = 0; i < 20; ++i) blocks.push_back(gr_malloc(3u << 20));   // huge mappings
  gr_stats_get(&after_stats);
  size_t after = mapping_count();
  size_t segments = after_stats.segments - before_stats.segments;
  REQUIRE(segments >= 50);
  // Header guard and end guard: at most 4 mappings per segment, 2 per huge block.
  REQUIRE(after - before <= 4 * segments + 2 * 20 + 4);
  std::printf("hardened: %zu mappings for %zu segments and 20 huge blocks\n", after - before,
              segments);
  for (void* p : blocks) gr_free(p);
}

// Found by the fuzzer: a zero-byte request with an alignment above the slab
// range asked for a span of zero slices (division by zero), or returned a
// pointer just past its span.
TEST_CASE("aligned allocation of zero bytes with a large alignment") {
  for (size_t align : {size_t(32768), size_t(65536), size_t(1) << 20}) {
    void* p = gr_aligned_alloc(align, 0);
    REQUIRE(p != nullptr);
    REQUIRE(uintptr_t(p) % align == 0);
    REQUIRE(gr_owns(p));
    REQUIRE(gr_usable_size(p) >= 1);
    gr_free(p);
  }
}
