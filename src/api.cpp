// The gr_* entry points other than the two fast paths (alloc.cpp): errno,
// overflow checks, alignment, realloc, ownership, first-class heaps.
#include <cerrno>
#include <cstring>

#include "granule.h"
#include "heap.h"
#include "huge.h"
#include "options.h"
#include "os/os.h"
#include "purge.h"
#include "report.h"
#include "segment.h"

using namespace granule;

namespace {

inline bool is_pow2(size_t a) { return a != 0 && (a & (a - 1)) == 0; }

Heap* owner_heap() {
  Heap* h = heap_current();
  return !heap_is_placeholder(h) ? h : heap_thread_init();
}

void* aligned_alloc_impl(size_t alignment, size_t size) {
  if (alignment <= kMinAlign) return gr_malloc(size);
  Heap* h = owner_heap();
  void* p = h ? heap_alloc_aligned(h, alignment, size) : nullptr;
  if (!p) errno = ENOMEM;
  return p;
}

bool valid_first_class(const Heap* h) {
  return h && !heap_is_thread(h) && h->state.load(std::memory_order_acquire) == HeapState::kLive;
}

// A realloc stays in place while the block holds `size` bytes (size 0 never:
// it frees) and would not be mostly wasted.
inline bool stays_in_place(size_t size, size_t usable) {
  return size - 1 < usable && size >= usable / 2;
}

// A span growing by a quarter or less (list arrays, buffers that grow a few
// percent at a time, each step a full copy otherwise) takes the free slices
// right after it. A doubling still moves: its bytes are copied about once
// over a run of them, and the old span serves what comes next (in place, a
// doubling sqlite grew into fresh slices and peaked 4 MiB higher).
inline bool grows_in_place(void* p, size_t size, size_t usable) {
  return size > kMediumMax && size <= kLargeMax && size > usable && size - usable <= usable / 4 &&
         heap_grow_span(p, size);
}

// Move p's contents into a new block from `alloc` when they don't fit (and,
// with `grow`, its span can't grow in place).
template <class Alloc>
void* realloc_with(void* p, size_t size, Alloc alloc, bool grow = false) {
  size_t usable = heap_usable_size(p);
  if (usable == 0) {
    // Not a live block of ours: its size is unknown, so copying from it could
    // read past its end, and freeing it could corrupt whoever owns it. Leave
    // it alone; the caller keeps a valid p, as after any failed realloc.
    if (map_kind(uintptr_t(p)) == kMapNone)
      report_error(ErrorKind::kForeignRealloc, p, 0);
    else
      heap_free_slow(p);  // ours but not a live block start: reports, changes nothing
    errno = EINVAL;
    return nullptr;
  }
  if (stays_in_place(size, usable) || (grow && grows_in_place(p, size, usable))) return p;
  void* q = alloc(size);
  if (!q) return nullptr;  // p is untouched
  std::memcpy(q, p, size < usable ? size : usable);
  gr_free(p);
  return q;
}

__attribute__((noinline)) void* realloc_slow(void* p, size_t size) {
  if (!p) return gr_malloc(size);
  if (size == 0) {  // as glibc: free and return NULL
    gr_free(p);
    return nullptr;
  }
  if (size > kMaxRequest) {
    errno = ENOMEM;
    return nullptr;
  }
  // A huge block growing past its mapping moves its pages instead of copying
  // them (nullptr when it fits, or can't: then as any other block).
  if (size > kLargeMax && map_kind(uintptr_t(p)) == kMapHuge) {
    size_t fresh;
    if (void* q = huge_grow(uintptr_t(p), size, &fresh)) {
      heap_offset_growth(heap_current(), fresh);
      return q;
    }
  }
  return realloc_with(p, size, gr_malloc, true);
}

// A slab block is small: memset, inline. A span may be fresh, or reused
// after touching only some of its pages: os::zero leaves alone the pages
// nobody touched.
inline void zero_block(void* p, size_t total) {
  if (total <= kMediumMax)
    std::memset(p, 0, total);
  else
    os::zero(p, total);
}

}  // namespace

extern "C" {

void* gr_calloc(size_t count, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(count, size, &total)) {
    errno = ENOMEM;
    return nullptr;
  }
  if (total > kLargeMax) {
    // Fresh mappings are zero already: don't touch (and commit) every page.
    if (total > kMaxRequest) {
      errno = ENOMEM;
      return nullptr;
    }
    void* p = heap_alloc_huge(heap_current(), total, kMinAlign, true);
    if (!p) errno = ENOMEM;
    return p;
  }
  void* p = gr_malloc(total);
  if (p) zero_block(p, total);
  return p;
}

void* gr_realloc(void* p, size_t size) {
  if constexpr (!kSecure) {
    // Fast path: the caller's own live block that still fits, and would not
    // be mostly wasted, stays where it is (interpreters realloc small blocks
    // a lot). NULL, size 0 and everything else take realloc_slow.
    if (Slab* s = live_block_slice(p); s && slab_fast_owner(s) == heap_current()) {
      if (stays_in_place(size, s->block_size)) return p;
    }
  }
  return realloc_slow(p, size);
}

void* gr_reallocarray(void* p, size_t count, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(count, size, &total)) {
    errno = ENOMEM;
    return nullptr;
  }
  return gr_realloc(p, total);
}

void gr_free_sized(void* p, size_t) { gr_free(p); }

void gr_free_aligned_sized(void* p, size_t, size_t) { gr_free(p); }

size_t gr_usable_size(const void* p) {
  if (!p) return 0;
  size_t n = heap_usable_size(p);
  // The hardened build aborts on reports; a size query corrupts nothing, so
  // there it stays a quiet 0.
  if (n == 0 && !kSecure && map_kind(uintptr_t(p)) == kMapNone) {
    report_error(ErrorKind::kForeignUsableSize, p, 0);
  }
  return n;
}

void* gr_aligned_alloc(size_t alignment, size_t size) {
  if (!is_pow2(alignment)) {
    errno = EINVAL;
    return nullptr;
  }
  return aligned_alloc_impl(alignment, size);
}

int gr_posix_memalign(void** out, size_t alignment, size_t size) {
  if (!out || !is_pow2(alignment) || alignment % sizeof(void*) != 0) return EINVAL;
  int saved = errno;
  void* p = aligned_alloc_impl(alignment, size);
  errno = saved;  // posix_memalign reports through its result only
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}

void* gr_aligned_realloc(void* p, size_t alignment, size_t size) {
  if (!is_pow2(alignment)) {
    errno = EINVAL;
    return nullptr;
  }
  if (!p) return aligned_alloc_impl(alignment, size);
  if (size == 0) {
    gr_free(p);
    return nullptr;
  }
  if ((uintptr_t(p) & (alignment - 1)) != 0) {
    size_t usable = heap_usable_size(p);
    if (!usable) return realloc_with(p, size, [](size_t) -> void* { return nullptr; });
    void* q = aligned_alloc_impl(alignment, size);
    if (!q) return nullptr;
    std::memcpy(q, p, size < usable ? size : usable);
    gr_free(p);
    return q;
  }
  return realloc_with(p, size, [alignment](size_t n) { return aligned_alloc_impl(alignment, n); });
}

bool gr_owns(const void* p) { return map_kind(uintptr_t(p)) != kMapNone; }

int gr_version(void) {
  return (GRANULE_VERSION_MAJOR << 16) | (GRANULE_VERSION_MINOR << 8) | GRANULE_VERSION_PATCH;
}

void gr_collect(bool force) {
  heap_collect_current();
  if (heap_purge_all(force)) purge_notify();
}

long gr_option_get(gr_option_t o) {
  if (unsigned(o) >= GR_OPTION_COUNT_) return -1;
  return option(o);
}

const char* gr_option_name(gr_option_t o) {
  if (unsigned(o) >= GR_OPTION_COUNT_) return nullptr;
  return option_info(o).name;
}

bool gr_option_set(gr_option_t o, long value) {
  if (!option_set(o, value)) return false;
  if (o == GR_OPTION_PURGE_DELAY || o == GR_OPTION_PURGE_THREAD) purge_options_changed();
  return true;
}

// ---- first-class heaps ----

gr_heap_t* gr_heap_create(const gr_heap_options_t* options) {
  size_t initial = options ? options->initial_reserve : 0;
  size_t max = options ? options->max_size : 0;
  Heap* h = heap_create(initial, max);
  if (!h) errno = ENOMEM;
  return reinterpret_cast<gr_heap_t*>(h);
}

void gr_heap_destroy(gr_heap_t* heap) {
  auto* h = reinterpret_cast<Heap*>(heap);
  if (valid_first_class(h)) heap_destroy(h);
}

void gr_heap_reset(gr_heap_t* heap) {
  auto* h = reinterpret_cast<Heap*>(heap);
  if (valid_first_class(h)) heap_reset(h);
}

void* gr_heap_malloc(gr_heap_t* heap, size_t size) {
  auto* h = reinterpret_cast<Heap*>(heap);
  if (!valid_first_class(h)) {
    errno = EINVAL;
    return nullptr;
  }
  void* p;
  {
    LockGuard guard(h->owner_lock);
    p = heap_alloc(h, size);
  }
  if (!p) errno = ENOMEM;
  return p;
}

void* gr_heap_calloc(gr_heap_t* heap, size_t count, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(count, size, &total)) {
    errno = ENOMEM;
    return nullptr;
  }
  void* p = gr_heap_malloc(heap, total);
  if (p) zero_block(p, total);
  return p;
}

void* gr_heap_realloc(gr_heap_t* heap, void* p, size_t size) {
  if (!p) return gr_heap_malloc(heap, size);
  if (!valid_first_class(reinterpret_cast<Heap*>(heap))) {
    errno = EINVAL;
    return nullptr;
  }
  if (size == 0) {
    gr_free(p);
    return nullptr;
  }
  return realloc_with(
      p, size, [heap](size_t n) { return gr_heap_malloc(heap, n); }, gr_heap_of(p) == heap);
}

void* gr_heap_aligned_alloc(gr_heap_t* heap, size_t alignment, size_t size) {
  auto* h = reinterpret_cast<Heap*>(heap);
  if (!valid_first_class(h) || !is_pow2(alignment)) {
    errno = EINVAL;
    return nullptr;
  }
  void* p;
  {
    LockGuard guard(h->owner_lock);
    p = heap_alloc_aligned(h, alignment, size);
  }
  if (!p) errno = ENOMEM;
  return p;
}

gr_heap_t* gr_heap_of(const void* p) {
  Heap* h = heap_of_block(p);
  return h && !heap_is_thread(h) ? reinterpret_cast<gr_heap_t*>(h) : nullptr;
}

}  // extern "C"
