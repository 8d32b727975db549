// The Linux platform layer's own lookups.
#include <catch2/catch.hpp>

#include <time.h>

#include <cstdint>

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
