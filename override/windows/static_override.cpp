// Link-time override for mingw-w64 programs (libgranule-static.a): defining
// malloc & co. here wins over the C runtime's import library for the program
// and its static libraries (static libstdc++'s operator new calls this
// malloc). The mingw headers declare the _aligned_*, _msize, _expand and
// _recalloc family dllimport, so calls reach them through __imp_NAME
// pointers: those are defined too.
//
// The runtime still allocates for itself (_strdup, stdio buffers, getcwd),
// and those blocks reach this free/realloc: they go to the runtime's real
// functions, found with GetProcAddress in the DLL that implements _strdup
// for this program (msvcrt.dll or ucrtbase.dll).
#define WIN32_LEAN_AND_MEAN
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>

#include <cerrno>
#include <cstring>

#include "aligned_blocks.h"
#include "granule.h"

using namespace granule::win;

// The headers declare these dllimport; defining them is the point.
#pragma GCC diagnostic ignored "-Wattributes"

// The import slot of _strdup (never defined here): it holds the runtime's
// own address, whichever DLL the program was linked against.
extern "C" void* __imp__strdup;

namespace {

struct Real {
  void (*free)(void*);
  size_t (*msize)(void*);
  void* (*realloc)(void*, size_t);
  void* (*expand)(void*, size_t);
  void (*aligned_free)(void*);
  void* (*aligned_offset_realloc)(void*, size_t, size_t, size_t);
  void* (*aligned_offset_recalloc)(void*, size_t, size_t, size_t, size_t);
  size_t (*aligned_msize)(void*, size_t, size_t);
};
Real g_real;
INIT_ONCE g_real_once = INIT_ONCE_STATIC_INIT;

template <class F>
void resolve(HMODULE m, const char* name, F* out) {
  *out = reinterpret_cast<F>(reinterpret_cast<void*>(GetProcAddress(m, name)));
}

BOOL CALLBACK init_real(PINIT_ONCE, PVOID, PVOID*) {
  HMODULE crt = nullptr;
  GetModuleHandleExW(
      GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
      static_cast<LPCWSTR>(__imp__strdup), &crt);
  if (!crt) crt = GetModuleHandleW(L"msvcrt.dll");
  if (!crt) return TRUE;
  resolve(crt, "free", &g_real.free);
  resolve(crt, "_msize", &g_real.msize);
  resolve(crt, "realloc", &g_real.realloc);
  resolve(crt, "_expand", &g_real.expand);
  resolve(crt, "_aligned_free", &g_real.aligned_free);
  resolve(crt, "_aligned_offset_realloc", &g_real.aligned_offset_realloc);
  resolve(crt, "_aligned_offset_recalloc", &g_real.aligned_offset_recalloc);
  resolve(crt, "_aligned_msize", &g_real.aligned_msize);
  return TRUE;
}

const Real& real() {
  InitOnceExecuteOnce(&g_real_once, init_real, nullptr, nullptr);
  return g_real;
}

void* check(void* p) {
  if (!p) errno = ENOMEM;
  return p;
}

}  // namespace

extern "C" {

void* __cdecl malloc(size_t n) { return gr_malloc(n); }
void* __cdecl calloc(size_t count, size_t size) { return gr_calloc(count, size); }

void __cdecl free(void* p) {
  if (!p) return;
  if (gr_owns(p)) return gr_free(p);
  if (real().free) real().free(p);
}

size_t __cdecl _msize(void* p) {
  if (p && gr_owns(p)) return gr_usable_size(p);
  if (p && real().msize) return real().msize(p);
  errno = EINVAL;
  return size_t(-1);
}

void* __cdecl realloc(void* p, size_t n) {
  if (!p || gr_owns(p)) return gr_realloc(p, n);
  // A runtime block: move it into Granule, the runtime frees the old one.
  if (n == 0) {
    free(p);
    return nullptr;
  }
  const size_t old = real().msize ? real().msize(p) : size_t(-1);
  if (old == size_t(-1)) return real().realloc ? real().realloc(p, n) : nullptr;
  void* q = gr_malloc(n);
  if (!q) return check(q);
  std::memcpy(q, p, old < n ? old : n);
  real().free(p);
  return q;
}

void* __cdecl _expand(void* p, size_t n) {
  if (p && gr_owns(p)) return n <= gr_usable_size(p) ? p : check(nullptr);
  return real().expand ? real().expand(p, n) : check(nullptr);
}

void* __cdecl _recalloc(void* p, size_t count, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(count, size, &total)) return check(nullptr);
  const size_t old = !p ? 0 : gr_owns(p) ? gr_usable_size(p) : _msize(p);
  void* q = realloc(p, total);
  if (q && old != size_t(-1) && total > old)
    std::memset(static_cast<char*>(q) + old, 0, total - old);
  return q;
}

void* __cdecl _aligned_offset_malloc(size_t size, size_t align, size_t offset) {
  if (!is_pow2(align) || (offset && offset >= size)) {
    errno = EINVAL;
    return nullptr;
  }
  return check(aligned_offset_alloc(size, align, offset));
}

void* __cdecl _aligned_malloc(size_t size, size_t align) {
  return _aligned_offset_malloc(size, align, 0);
}

void __cdecl _aligned_free(void* p) {
  if (!p) return;
  if (gr_owns(p)) return aligned_release(p);
  if (real().aligned_free) real().aligned_free(p);
}

void* __cdecl _aligned_offset_realloc(void* p, size_t size, size_t align, size_t offset) {
  if (p && !gr_owns(p))
    return real().aligned_offset_realloc ? real().aligned_offset_realloc(p, size, align, offset)
                                         : check(nullptr);
  void* q = aligned_offset_realloc_ours(p, size, align, offset);
  return size ? check(q) : q;
}

void* __cdecl _aligned_realloc(void* p, size_t size, size_t align) {
  return _aligned_offset_realloc(p, size, align, 0);
}

void* __cdecl _aligned_offset_recalloc(void* p, size_t count, size_t size, size_t align,
                                       size_t offset) {
  if (p && !gr_owns(p))
    return real().aligned_offset_recalloc
               ? real().aligned_offset_recalloc(p, count, size, align, offset)
               : check(nullptr);
  void* q = aligned_offset_recalloc_ours(p, count, size, align, offset);
  return count && size ? check(q) : q;
}

void* __cdecl _aligned_recalloc(void* p, size_t count, size_t size, size_t align) {
  return _aligned_offset_recalloc(p, count, size, align, 0);
}

size_t __cdecl _aligned_msize(void* p, size_t align, size_t offset) {
  if (p && gr_owns(p)) return our_aligned_size(p);
  if (p && real().aligned_msize) return real().aligned_msize(p, align, offset);
  errno = EINVAL;
  return size_t(-1);
}

// What dllimport-declared calls load their target from.
void* __imp_malloc = reinterpret_cast<void*>(&malloc);
void* __imp_calloc = reinterpret_cast<void*>(&calloc);
void* __imp_realloc = reinterpret_cast<void*>(&realloc);
void* __imp_free = reinterpret_cast<void*>(&free);
void* __imp__msize = reinterpret_cast<void*>(&_msize);
void* __imp__expand = reinterpret_cast<void*>(&_expand);
void* __imp__recalloc = reinterpret_cast<void*>(&_recalloc);
void* __imp__aligned_malloc = reinterpret_cast<void*>(&_aligned_malloc);
void* __imp__aligned_free = reinterpret_cast<void*>(&_aligned_free);
void* __imp__aligned_realloc = reinterpret_cast<void*>(&_aligned_realloc);
void* __imp__aligned_recalloc = reinterpret_cast<void*>(&_aligned_recalloc);
void* __imp__aligned_msize = reinterpret_cast<void*>(&_aligned_msize);
void* __imp__aligned_offset_malloc = reinterpret_cast<void*>(&_aligned_offset_malloc);
void* __imp__aligned_offset_realloc = reinterpret_cast<void*>(&_aligned_offset_realloc);
void* __imp__aligned_offset_recalloc = reinterpret_cast<void*>(&_aligned_offset_recalloc);

}  // extern "C"
