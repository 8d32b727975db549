// The C++ allocation operators. The only place in Granule that throws:
// operator new reports failure with std::bad_alloc after trying the
// new-handler, as the standard requires.
//
// libgranule.so does not link libstdc++ (a C program preloading it would pay
// for loading it): the two libstdc++ functions used here are weak, bound to
// the process's libstdc++ when there is one. A program that calls operator
// new is a C++ program and has it; without it, failure aborts with a message.
#include <cstddef>
#include <cstdlib>
#include <new>

#include "granule.h"

// std::__throw_bad_alloc() and std::get_new_handler(), weak.
[[noreturn]] void cxx_throw_bad_alloc() __asm__("_ZSt17__throw_bad_allocv") __attribute__((weak));
std::new_handler cxx_get_new_handler() noexcept __asm__("_ZSt15get_new_handlerv")
    __attribute__((weak));

namespace {

[[noreturn]] void throw_bad_alloc() {
  if (cxx_throw_bad_alloc) cxx_throw_bad_alloc();
  abort();  // no C++ runtime in the process, so nobody could catch it
}

std::new_handler current_handler() { return cxx_get_new_handler ? cxx_get_new_handler() : nullptr; }

// After a failed allocation: ask the new-handler and try again until it
// gives up (kThrow: then throw; the nothrow forms return NULL). A handler
// that throws in a nothrow form is the program's choice and propagates
// (catching would need libstdc++'s runtime). Out of line: inlined, the loop
// and its calls would cost every operator new a stack frame.
template <bool kThrow, class Alloc>
__attribute__((noinline)) void* retry(Alloc alloc) {
  for (;;) {
    std::new_handler handler = current_handler();
    if (!handler) {
      if constexpr (kThrow) throw_bad_alloc();
      return nullptr;
    }
    handler();
    if (void* p = alloc()) return p;
  }
}

// Hot: malloc's fast path and one test; a failure goes out of line.
template <bool kThrow, class Alloc>
inline void* allocate(Alloc alloc) {
  void* p = alloc();
  return __builtin_expect(p != nullptr, 1) ? p : retry<kThrow>(alloc);
}
inline void* new_or_throw(size_t n) {
  return allocate<true>([n] { return gr_malloc(n); });
}
inline void* new_aligned_or_throw(size_t n, std::align_val_t al) {
  return allocate<true>([n, al] { return gr_aligned_alloc(size_t(al), n); });
}
inline void* new_nothrow(size_t n) noexcept {
  return allocate<false>([n] { return gr_malloc(n); });
}
inline void* new_aligned_nothrow(size_t n, std::align_val_t al) noexcept {
  return allocate<false>([n, al] { return gr_aligned_alloc(size_t(al), n); });
}

}  // namespace

#define GRANULE_EXPORT __attribute__((visibility("default")))

GRANULE_EXPORT void* operator new(size_t n) { return new_or_throw(n); }
GRANULE_EXPORT void* operator new[](size_t n) { return new_or_throw(n); }
GRANULE_EXPORT void* operator new(size_t n, const std::nothrow_t&) noexcept {
  return new_nothrow(n);
}
GRANULE_EXPORT void* operator new[](size_t n, const std::nothrow_t&) noexcept {
  return new_nothrow(n);
}
GRANULE_EXPORT void* operator new(size_t n, std::align_val_t al) {
  return new_aligned_or_throw(n, al);
}
GRANULE_EXPORT void* operator new[](size_t n, std::align_val_t al) {
  return new_aligned_or_throw(n, al);
}
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
GRANULE_EXPORT void operator delete[](void* p, std::align_val_t al,
                                      const std::nothrow_t&) noexcept {
  gr_free_aligned_sized(p, size_t(al), 0);
}
