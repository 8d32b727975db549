// The C allocation names of libc, glibc's aliases and its malloc extras,
// each a forwarder onto the gr_* API.
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "granule.h"

#define GRANULE_EXPORT extern "C" __attribute__((visibility("default")))

namespace {
size_t page_size() { return size_t(sysconf(_SC_PAGESIZE)); }

// glibc's memalign takes any alignment: it rounds one that is not a power of
// two up to the next one, and only refuses alignments that cannot be.
// (aligned_alloc stays strict, as C17 and glibc >= 2.38 make it.)
void* memalign_like_glibc(size_t a, size_t n) {
  if (a > SIZE_MAX / 2 + 1) return errno = EINVAL, nullptr;
  size_t p2 = 1;
  while (p2 < a) p2 <<= 1;
  return gr_aligned_alloc(p2, n);
}
}  // namespace

GRANULE_EXPORT void* malloc(size_t n) { return gr_malloc(n); }
GRANULE_EXPORT void free(void* p) { gr_free(p); }
GRANULE_EXPORT void* calloc(size_t n, size_t s) { return gr_calloc(n, s); }
GRANULE_EXPORT void* realloc(void* p, size_t n) { return gr_realloc(p, n); }
GRANULE_EXPORT void* reallocarray(void* p, size_t n, size_t s) { return gr_reallocarray(p, n, s); }
GRANULE_EXPORT int posix_memalign(void** out, size_t a, size_t n) { return gr_posix_memalign(out, a, n); }
GRANULE_EXPORT void* aligned_alloc(size_t a, size_t n) { return gr_aligned_alloc(a, n); }
GRANULE_EXPORT void* memalign(size_t a, size_t n) { return memalign_like_glibc(a, n); }
GRANULE_EXPORT void* valloc(size_t n) { return gr_aligned_alloc(page_size(), n); }
GRANULE_EXPORT void* pvalloc(size_t n) {
  size_t ps = page_size();
  size_t rounded = (n + ps - 1) & ~(ps - 1);
  if (rounded < n) return errno = ENOMEM, nullptr;
  return gr_aligned_alloc(ps, rounded ? rounded : ps);
}
GRANULE_EXPORT size_t malloc_usable_size(void* p) { return gr_usable_size(p); }
GRANULE_EXPORT void cfree(void* p) { gr_free(p); }
GRANULE_EXPORT void free_sized(void* p, size_t n) { gr_free_sized(p, n); }
GRANULE_EXPORT void free_aligned_sized(void* p, size_t a, size_t n) { gr_free_aligned_sized(p, a, n); }

// glibc's internal names, used by some programs and by libc itself.
GRANULE_EXPORT void* __libc_malloc(size_t n) { return gr_malloc(n); }
GRANULE_EXPORT void* __libc_calloc(size_t n, size_t s) { return gr_calloc(n, s); }
GRANULE_EXPORT void* __libc_realloc(void* p, size_t n) { return gr_realloc(p, n); }
GRANULE_EXPORT void __libc_free(void* p) { gr_free(p); }
GRANULE_EXPORT void* __libc_memalign(size_t a, size_t n) { return memalign_like_glibc(a, n); }
GRANULE_EXPORT void* __libc_valloc(size_t n) { return valloc(n); }
GRANULE_EXPORT void* __libc_pvalloc(size_t n) { return pvalloc(n); }
GRANULE_EXPORT int __posix_memalign(void** out, size_t a, size_t n) { return gr_posix_memalign(out, a, n); }

GRANULE_EXPORT int malloc_trim(size_t) {
  gr_stats_t before, after;
  gr_stats_get(&before);
  gr_collect(true);
  gr_stats_get(&after);
  return after.committed < before.committed ? 1 : 0;
}

GRANULE_EXPORT struct mallinfo2 mallinfo2(void) {
  gr_stats_t st;
  gr_stats_get(&st);
  struct mallinfo2 mi = {};
  mi.arena = st.committed;  // memory the allocator holds
  mi.hblks = st.huge_blocks;
  mi.uordblks = st.in_use;
  mi.fordblks = st.committed > st.in_use ? st.committed - st.in_use : 0;
  mi.keepcost = 0;
  mi.usmblks = st.peak_committed;
  return mi;
}

GRANULE_EXPORT struct mallinfo mallinfo(void) {
  struct mallinfo2 m2 = mallinfo2();
  struct mallinfo mi = {};
  // The old struct has int fields: saturate rather than wrap.
  auto clamp = [](size_t v) { return v > 0x7fffffff ? 0x7fffffff : int(v); };
  mi.arena = clamp(m2.arena);
  mi.hblks = clamp(m2.hblks);
  mi.uordblks = clamp(m2.uordblks);
  mi.fordblks = clamp(m2.fordblks);
  mi.usmblks = clamp(m2.usmblks);
  return mi;
}

GRANULE_EXPORT void malloc_stats(void) { gr_stats_print(); }

// glibc's tuning parameters have no Granule equivalent. Like glibc, accept
// every parameter (unknown ones included: mallopt(3) returns 1 for them) and
// refuse only the values glibc refuses, so programs see the same results.
GRANULE_EXPORT int mallopt(int param, int value) {
  if (param == M_MXFAST && (value < 0 || size_t(value) > 80 * sizeof(size_t) / 4)) return 0;
  return 1;
}
