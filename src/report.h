// Messages on stderr that never allocate: a small printf subset
// (%s %d %u %ld %lu %zu %llu %p %x %lx %c %%) into a stack buffer.
#pragma once

#include <cstdarg>
#include <cstddef>

// Our own formatter takes %zu everywhere; mingw's "printf" archetype is
// Microsoft's, which doesn't, so GCC there checks against GNU's.
#if defined(_WIN32) && !defined(__clang__)
#define GRANULE_PRINTF(f, a) __attribute__((format(gnu_printf, f, a)))
#else
#define GRANULE_PRINTF(f, a) __attribute__((format(printf, f, a)))
#endif

namespace granule {

size_t format(char* buf, size_t size, const char* fmt, va_list ap);
size_t format(char* buf, size_t size, const char* fmt, ...) GRANULE_PRINTF(3, 4);
void report_warning(const char* fmt, ...) GRANULE_PRINTF(1, 2);
void report_verbose(const char* fmt, ...) GRANULE_PRINTF(1, 2);

enum class ErrorKind {
  kInvalidFree,
  kDoubleFree,
  kInteriorFree,
  kOverflow,
  kUseAfterFree,
  kCorrupt,
  kForeignRealloc,     // realloc of a pointer outside Granule's memory
  kForeignUsableSize,  // malloc_usable_size of a pointer outside Granule's memory
};
// A heap error found in a free-like call: reported (once per address) when
// SHOW_ERRORS is on; the hardened build reports always and aborts.
void report_error(ErrorKind kind, const void* p, size_t size_class_bytes);
const char* error_name(ErrorKind kind);

}  // namespace granule
