// Per-operation cost probe for callgrind: performs N operations of one kind.
// The driver runs it with N and 2N and divides the difference by N, so
// process start-up and allocator initialisation cancel out.
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "bench_common.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr,
                 "usage: %s OP N\n  OP: malloc16 malloc64 malloc256 malloc1024 calloc64 "
                 "realloc_inplace remote_free\n",
                 argv[0]);
    return 64;
  }
  const char* op = argv[1];
  long n = std::strtol(argv[2], nullptr, 10);

  // One warm-up operation of the same kind, so the first-call slow path
  // (heap creation, first slab) is part of the constant start-up cost.
  auto malloc_free = [](size_t size, long count) {
    for (long i = 0; i < count; ++i) {
      void* p = std::malloc(size);
      bench::escape(p);
      std::free(p);
    }
  };
  if (std::strncmp(op, "malloc", 6) == 0) {
    size_t size = std::strtoul(op + 6, nullptr, 10);
    malloc_free(size, 1);
    malloc_free(size, n);
  } else if (std::strcmp(op, "calloc64") == 0) {
    for (long i = 0; i <= n; ++i) {
      void* p = std::calloc(1, 64);
      bench::escape(p);
      std::free(p);
    }
  } else if (std::strcmp(op, "realloc_inplace") == 0) {
    // 40 <-> 48 bytes stays inside one size class in every allocator measured.
    void* p = std::malloc(48);
    for (long i = 0; i <= n; ++i) {
      p = std::realloc(p, (i & 1) ? 40 : 48);
      bench::escape(p);
    }
    std::free(p);
  } else if (std::strcmp(op, "remote_free") == 0) {
    // Cost of malloc in one thread plus free in another. The vector and the
    // thread start are the same for N and 2N apart from the vector's size.
    std::vector<void*> blocks(static_cast<size_t>(n) + 1);
    for (auto& p : blocks) p = std::malloc(64);
    std::thread t([&] {
      for (void* p : blocks) std::free(p);
    });
    t.join();
  } else {
    std::fprintf(stderr, "unknown op %s\n", op);
    return 64;
  }
  return 0;
}
