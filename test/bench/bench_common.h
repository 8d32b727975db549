// Shared helpers for the benchmark workloads. The programs call plain
// malloc/free/new/delete; the allocator under test is chosen by LD_PRELOAD.
#pragma once

#include <unistd.h>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace bench {

// Command line: "--name value" pairs. Unknown names are an error so a typo in
// the driver cannot silently run the default size.
class Args {
 public:
  Args(int argc, char** argv) : argc_(argc), argv_(argv) {
    for (int i = 1; i < argc; i += 2) {
      if (std::strncmp(argv[i], "--", 2) != 0 || i + 1 >= argc) {
        std::fprintf(stderr, "%s: expected --name value pairs, got '%s'\n", argv[0], argv[i]);
        std::exit(64);
      }
    }
  }
  long get(const char* name, long fallback) {
    for (int i = 1; i + 1 < argc_; i += 2) {
      if (std::strcmp(argv_[i] + 2, name) == 0) {
        used_ |= 1ull << (i / 2);
        return std::strtol(argv_[i + 1], nullptr, 0);
      }
    }
    return fallback;
  }
  // Call after all get()s: rejects options the program does not know.
  void done() {
    for (int i = 1; i + 1 < argc_; i += 2) {
      if (!(used_ & (1ull << (i / 2)))) {
        std::fprintf(stderr, "%s: unknown option %s\n", argv_[0], argv_[i]);
        std::exit(64);
      }
    }
  }

 private:
  int argc_;
  char** argv_;
  unsigned long long used_ = 0;
};

// Small fast PRNG (xorshift64*): the workloads must not spend their time in
// <random>, and each thread needs its own deterministic stream.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull) {
    if (s == 0) s = 1;
  }
  uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
  }
  // Uniform in [lo, hi].
  size_t range(size_t lo, size_t hi) { return lo + next() % (hi - lo + 1); }
};

[[noreturn]] inline void fail(const char* what, const void* p, size_t n) {
  std::fprintf(stderr, "VERIFY FAILED: %s (block %p, %zu bytes)\n", what, p, n);
  std::fflush(stderr);
  _exit(3);
}

inline uint64_t cookie(const void* p, size_t n, uint64_t tag) {
  return (reinterpret_cast<uintptr_t>(p) * 0xff51afd7ed558ccdull) ^ (n << 7) ^ tag;
}

// Marks a block so that a later check() detects an overlap with another live
// block or a block handed out twice: both ends carry a cookie derived from the
// address, and every page in between is touched so RSS reflects the size.
inline void stamp(void* p, size_t n, uint64_t tag = 0) {
  if (p == nullptr) fail("allocation returned NULL", p, n);
  auto* b = static_cast<unsigned char*>(p);
  uint64_t c = cookie(p, n, tag);
  if (n >= 16) {
    std::memcpy(b, &c, 8);
    uint64_t e = ~c;
    std::memcpy(b + n - 8, &e, 8);
    for (size_t off = 4096; off + 8 < n - 8; off += 4096)
      b[off] = static_cast<unsigned char>(c >> 8);
  } else {
    for (size_t i = 0; i < n; ++i) b[i] = static_cast<unsigned char>(c >> (8 * (i & 7)));
  }
}

inline void check(const void* p, size_t n, uint64_t tag = 0) {
  auto* b = static_cast<const unsigned char*>(p);
  uint64_t c = cookie(p, n, tag);
  if (n >= 16) {
    uint64_t h, e;
    std::memcpy(&h, b, 8);
    std::memcpy(&e, b + n - 8, 8);
    if (h != c || e != ~c) fail("cookie mismatch", p, n);
    for (size_t off = 4096; off + 8 < n - 8; off += 4096)
      if (b[off] != static_cast<unsigned char>(c >> 8)) fail("page marker mismatch", p, n);
  } else {
    for (size_t i = 0; i < n; ++i)
      if (b[i] != static_cast<unsigned char>(c >> (8 * (i & 7)))) fail("byte mismatch", p, n);
  }
}

inline void* xmalloc(size_t n, uint64_t tag = 0) {
  void* p = std::malloc(n);
  stamp(p, n, tag);
  return p;
}

inline void xfree(void* p, size_t n, uint64_t tag = 0) {
  check(p, n, tag);
  std::free(p);
}

// Keeps the compiler from deleting allocations whose result is unused
// (GCC may elide a malloc/free or new/delete pair).
inline void escape(void* p) { asm volatile("" : : "g"(p) : "memory"); }

inline double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Hoard's false-sharing probe, shared by cache_scratch and cache_thrash:
// allocate one object, write it `writes` times, check no other thread wrote
// into it (it would if two threads' objects shared the block), free it.
inline void write_private_object(size_t size, long writes) {
  auto* p = static_cast<volatile char*>(std::malloc(size));
  if (p == nullptr) fail("allocation returned NULL", nullptr, size);
  for (long w = 0; w < writes; ++w)
    for (size_t k = 0; k < size; ++k) p[k] = static_cast<char>(w + k);
  for (size_t k = 0; k < size; ++k)
    if (p[k] != static_cast<char>(writes - 1 + k))
      fail("object written by another thread", const_cast<char*>(p), size);
  stamp(const_cast<char*>(p), size);
  xfree(const_cast<char*>(p), size);
}

}  // namespace bench
