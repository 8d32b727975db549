// The C++ allocation operators. The only place in Granule that throws:
// operator new reports failure with std::bad_alloc after trying the
// new-handler, as the standard requires.
#include <cstddef>
#include <new>

#include "granule.h"

namespace {

void* new_or_throw(size_t n) {
  for (;;) {
    if (void* p = gr_malloc(n)) return p;
    std::new_handler handler = std::get_new_handler();
    if (!handler) throw std::bad_alloc();
    handler();
  }
}

void* new_aligned_or_throw(size_t n, std::align_val_t al) {
  for (;;) {
    if (void* p = gr_aligned_alloc(size_t(al), n)) return p;
    std::new_handler handler = std::get_new_handler();
    if (!handler) throw std::bad_alloc();
    handler();
  }
}

void* new_nothrow(size_t n) noexcept {
  try {
    return new_or_throw(n);
  } catch (...) {
    return nullptr;
  }
}

void* new_aligned_nothrow(size_t n, std::align_val_t al) noexcept {
  try {
    return new_aligned_or_throw(n, al);
  } catch (...) {
    return nullptr;
  }
}

}  // namespace

#define GRANULE_EXPORT __attribute__((visibility("default")))

GRANULE_EXPORT void* operator new(size_t n) { return new_or_throw(n); }
GRANULE_EXPORT void* operator new[](size_t n) { return new_or_throw(n); }
GRANULE_EXPORT void* operator new(size_t n, const std::nothrow_t&) noexcept { return new_nothrow(n); }
GRANULE_EXPORT void* operator new[](size_t n, const std::nothrow_t&) noexcept { return new_nothrow(n); }
GRANULE_EXPORT void* operator new(size_t n, std::align_val_t al) { return new_aligned_or_throw(n, al); }
GRANULE_EXPORT void* operator new[](size_t n, std::align_val_t al) { return new_aligned_or_throw(n, al); }
GRANULE_EXPORT void* operator new(size_t n, std::align_val_t al, const std::nothrow_t&) noexcept {
  return new_aligned_nothrow(n, al);
}
GRANULE_EXPORT void* operator new[](size_t n, std::align_val_t al, const std::nothrow_t&) noexcept {
  return new_aligned_nothrow(n, al);
}

GRANULE_EXPORT void operator delete(void* p) noexcept { gr_free(p); }
GRANULE_EXPORT void operator delete[](void* p) noexcept { gr_free(p); }
GRANULE_EXPORT void operator delete(void* p, const std::nothrow_t&) noexcept { gr_free(p); }
GRANULE_EXPORT void operator delete[](void* p, const std::nothrow_t&) noexcept { gr_free(p); }
GRANULE_EXPORT void operator delete(void* p, size_t n) noexcept { gr_free_sized(p, n); }
GRANULE_EXPORT void operator delete[](void* p, size_t n) noexcept { gr_free_sized(p, n); }
GRANULE_EXPORT void operator delete(void* p, std::align_val_t al) noexcept {
  gr_free_aligned_sized(p, size_t(al), 0);
}
GRANULE_EXPORT void operator delete[](void* p, std::align_val_t al) noexcept {
  gr_free_aligned_sized(p, size_t(al), 0);
}
GRANULE_EXPORT void operator delete(void* p, size_t n, std::align_val_t al) noexcept {
  gr_free_aligned_sized(p, size_t(al), n);
}
GRANULE_EXPORT void operator delete[](void* p, size_t n, std::align_val_t al) noexcept {
  gr_free_aligned_sized(p, size_t(al), n);
}
GRANULE_EXPORT void operator delete(void* p, std::align_val_t al, const std::nothrow_t&) noexcept {
  gr_free_aligned_sized(p, size_t(al), 0);
}
GRANULE_EXPORT void operator delete[](void* p, std::align_val_t al, const std::nothrow_t&) noexcept {
  gr_free_aligned_sized(p, size_t(al), 0);
}
