// The Linux platform layer's own lookups.
#include <catch2/catch.hpp>

#include <sys/mman.h>
#include <time.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "os/os.h"
#include "os/vdso_linux.h"

namespace {
uint64_t ns(const timespec& t) { return uint64_t(t.tv_sec) * 1000000000u + uint64_t(t.tv_nsec); }
}  // namespace

TEST_CASE("the clock found in the vDSO reads what libc's clock_gettime reads") {
  granule::os::VdsoClock clock = granule::os::vdso_clock_gettime();
#if defined(__x86_64__) || defined(__aarch64__)
  REQUIRE(clock != nullptr);
#endif
  if (!clock) return;
  for (clockid_t id : {CLOCK_MONOTONIC, CLOCK_REALTIME}) {
    timespec before, mid, after;
    REQUIRE(clock_gettime(id, &before) == 0);
    REQUIRE(clock(id, &mid) == 0);
    REQUIRE(clock_gettime(id, &after) == 0);
    CHECK(ns(before) <= ns(mid));
    CHECK(ns(mid) <= ns(after));
  }
}

TEST_CASE("now_ms is the monotonic clock in milliseconds") {
  timespec before, after;
  REQUIRE(clock_gettime(CLOCK_MONOTONIC, &before) == 0);
  uint64_t now = granule::os::now_ms();
  REQUIRE(clock_gettime(CLOCK_MONOTONIC, &after) == 0);
  CHECK(ns(before) / 1000000 <= now);
  CHECK(now <= ns(after) / 1000000);
}

namespace {
constexpr size_t kPage = 4096;

bool all_zero(const unsigned char* p, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (p[i] != 0) return false;
  return true;
}

size_t resident_pages(void* p, size_t n) {
  std::vector<unsigned char> vec(n / kPage);
  if (mincore(p, n, vec.data()) != 0) return ~size_t{0};
  size_t r = 0;
  for (unsigned char v : vec) r += v & 1;
  return r;
}
}  // namespace

TEST_CASE("zero clears a range whether its pages are written or dropped") {
  constexpr size_t kSize = 2u << 20;  // 512 pages: past the size worth a residency check
  auto* m = static_cast<unsigned char*>(
      mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  REQUIRE(m != MAP_FAILED);
  madvise(m, kSize, MADV_NOHUGEPAGE);  // residency page by page
  // The first half dense (written whole), the second sparse (dropped); the
  // range starts and ends mid-page.
  std::memset(m, 0xa5, kSize / 2);
  for (size_t off = kSize / 2; off < kSize; off += 64 * kPage) m[off + 17] = 0x5a;
  granule::os::zero(m + 100, kSize - 200);
  // The sparse half faulted nothing in but the two pages the dense stretch
  // and the partial last page reach (asked before reading it: a read maps
  // the zero page, which mincore counts).
  CHECK(resident_pages(m + kSize / 2, kSize / 2) <= 2);
  CHECK(m[99] == 0xa5);
  CHECK(all_zero(m + 100, kSize - 200));

  // Locked memory can't be dropped: it must be written instead. Locked on
  // fault, so that it stays sparse and zero tries to drop it.
  madvise(m, kSize, MADV_DONTNEED);
  if (mlock2(m, kSize, MLOCK_ONFAULT) == 0) {
    for (size_t off = 0; off < kSize; off += 64 * kPage) m[off] = 0x77;
    REQUIRE(resident_pages(m, kSize) < kSize / kPage / 2);
    granule::os::zero(m, kSize);
    CHECK(all_zero(m, kSize));
    munlock(m, kSize);
  } else {
    WARN("mlock refused (RLIMIT_MEMLOCK): locked case not exercised");
  }
  munmap(m, kSize);
}

TEST_CASE("zero judges each stretch of a range longer than one residency query on its own") {
  // 12 stretches of 256 pages, three residency queries: every third stretch
  // written whole, the others touched once. Runs of alike stretches cross
  // the query boundaries.
  constexpr size_t kStretch = 256 * kPage, kCount = 12, kSize = kCount * kStretch;
  auto* m = static_cast<unsigned char*>(
      mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  REQUIRE(m != MAP_FAILED);
  madvise(m, kSize, MADV_NOHUGEPAGE);
  auto dense = [](size_t i) { return i % 3 == 0; };
  for (size_t i = 0; i < kCount; ++i) {
    if (dense(i))
      std::memset(m + i * kStretch, 0xa5, kStretch);
    else
      m[i * kStretch + 5 * kPage + 3] = 0x5a;
  }
  granule::os::zero(m, kSize);
  for (size_t i = 0; i < kCount; ++i) {
    INFO("stretch " << i);
    // Written stretches stay resident; touched-once ones are dropped.
    if (dense(i))
      CHECK(resident_pages(m + i * kStretch, kStretch) == kStretch / kPage);
    else
      CHECK(resident_pages(m + i * kStretch, kStretch) == 0);
  }
  CHECK(all_zero(m, kSize));
  munmap(m, kSize);
}
