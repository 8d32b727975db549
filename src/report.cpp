#include "report.h"

#include <atomic>
#include <cstdint>
#include <cstdlib>

#include "config.h"
#include "options.h"
#include "os/os.h"

namespace granule {
namespace {

struct Out {
  char* buf;
  size_t size, len;
  void put(char c) {
    if (len + 1 < size) buf[len] = c;
    ++len;
  }
  void str(const char* s) {
    for (s = s ? s : "(null)"; *s; ++s) put(*s);
  }
  void num(unsigned long long v, unsigned base, bool neg) {
    char tmp[24];
    int n = 0;
    do {
      tmp[n++] = "0123456789abcdef"[v % base];
      v /= base;
    } while (v);
    if (neg) put('-');
    while (n) put(tmp[--n]);
  }
};

}  // namespace

size_t format(char* buf, size_t size, const char* fmt, va_list ap) {
  Out o{buf, size, 0};
  for (; *fmt; ++fmt) {
    if (*fmt != '%') {
      o.put(*fmt);
      continue;
    }
    ++fmt;
    int longs = 0;
    bool size_t_arg = false;
    while (*fmt == 'l') ++longs, ++fmt;
    if (*fmt == 'z') size_t_arg = true, ++fmt;
    switch (*fmt) {
      case 's':
        o.str(va_arg(ap, const char*));
        break;
      case 'c':
        o.put(char(va_arg(ap, int)));
        break;
      case 'p':
        o.str("0x");
        o.num(uintptr_t(va_arg(ap, void*)), 16, false);
        break;
      case 'd': {
        long long v =
            longs ? (longs > 1 ? va_arg(ap, long long) : va_arg(ap, long)) : va_arg(ap, int);
        o.num(v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v, 10, v < 0);
        break;
      }
      case 'u':
      case 'x': {
        unsigned long long v = size_t_arg  ? va_arg(ap, size_t)
                               : longs > 1 ? va_arg(ap, unsigned long long)
                               : longs     ? va_arg(ap, unsigned long)
                                           : va_arg(ap, unsigned);
        o.num(v, *fmt == 'x' ? 16 : 10, false);
        break;
      }
      case '%':
        o.put('%');
        break;
      case 0:
        --fmt;
        break;
      default:
        o.put('%');
        o.put(*fmt);
        break;
    }
  }
  if (size) buf[o.len < size ? o.len : size - 1] = 0;
  return o.len;
}

size_t format(char* buf, size_t size, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  size_t n = format(buf, size, fmt, ap);
  va_end(ap);
  return n;
}

namespace {
void emit(const char* prefix, const char* fmt, va_list ap) {
  char line[512];
  size_t n = format(line, sizeof line, "%s", prefix);
  n += format(line + n, sizeof line - n - 1, fmt, ap);
  if (n > sizeof line - 2) n = sizeof line - 2;
  line[n++] = '\n';
  os::write_stderr(line, n);
}
}  // namespace

void report_warning(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  emit("granule: warning: ", fmt, ap);
  va_end(ap);
}

void report_verbose(const char* fmt, ...) {
  if (!option(GR_OPTION_VERBOSE)) return;
  va_list ap;
  va_start(ap, fmt);
  emit("granule: ", fmt, ap);
  va_end(ap);
}

const char* error_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidFree:
      return "invalid free (pointer not allocated by granule)";
    case ErrorKind::kDoubleFree:
      return "double free";
    case ErrorKind::kInteriorFree:
      return "free of an interior pointer";
    case ErrorKind::kOverflow:
      return "heap buffer overflow (canary overwritten)";
    case ErrorKind::kUseAfterFree:
      return "write after free";
    case ErrorKind::kCorrupt:
      return "heap metadata corrupted";
    case ErrorKind::kForeignRealloc:
      return "realloc of a pointer not allocated by granule (left alone, NULL returned)";
    case ErrorKind::kForeignUsableSize:
      return "malloc_usable_size of a pointer not allocated by granule (0 returned)";
  }
  return "heap error";
}

namespace {
// A small ring of recently reported addresses: each one is reported once.
constexpr int kRecent = 64;
std::atomic<uintptr_t> g_recent[kRecent];
std::atomic<unsigned> g_recent_next{0};
std::atomic<unsigned> g_reported{0};

bool seen_before(uintptr_t key) {
  for (auto& r : g_recent)
    if (r.load(std::memory_order_relaxed) == key) return true;
  g_recent[g_recent_next.fetch_add(1, std::memory_order_relaxed) % kRecent].store(
      key, std::memory_order_relaxed);
  return false;
}
}  // namespace

void report_error(ErrorKind kind, const void* p, size_t class_bytes) {
  if (!kSecure && !option(GR_OPTION_SHOW_ERRORS)) return;
  uintptr_t key = uintptr_t(p) ^ uintptr_t(kind);
  if (!kSecure &&
      (seen_before(key) || g_reported.fetch_add(1, std::memory_order_relaxed) >= 1000)) {
    return;
  }
  char line[256];
  size_t n;
  if (class_bytes)
    n = format(line, sizeof line, "granule: error: %s at %p (size class %zu bytes)\n",
               error_name(kind), p, class_bytes);
  else
    n = format(line, sizeof line, "granule: error: %s at %p\n", error_name(kind), p);
  os::write_stderr(line, n < sizeof line ? n : sizeof line - 1);
  if (kSecure) abort();
}

}  // namespace granule
