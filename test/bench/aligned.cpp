// Workload 10: aligned allocation through posix_memalign, aligned_alloc and
// aligned operator new, alignments 16 B to 64 KiB.
#include <malloc.h>

#include <cstdint>
#include <new>
#include <vector>

#include "bench_common.h"

int main(int argc, char** argv) {
  bench::Args args(argc, argv);
  long iters = args.get("iters", 400000);
  long live = args.get("live", 1000);
  size_t max_size = static_cast<size_t>(args.get("max", 4096));
  args.done();

  struct Block {
    void* p = nullptr;
    size_t n = 0, align = 0;
    int kind = 0;
  };
  bench::Rng rng(13);
  std::vector<Block> slots(static_cast<size_t>(live));
  auto release = [](Block& b) {
    bench::check(b.p, b.n);
    if (b.kind == 2)
      ::operator delete(b.p, std::align_val_t(b.align));
    else
      std::free(b.p);
  };
  for (long i = 0; i < iters; ++i) {
    Block& b = slots[rng.next() % live];
    if (b.p != nullptr) release(b);
    // Small alignments dominate in practice; large ones are rarer.
    int shift = rng.next() % 8 == 0 ? static_cast<int>(rng.range(7, 16))
                                    : static_cast<int>(rng.range(4, 6));
    b.align = size_t{1} << shift;
    b.n = rng.range(1, max_size);
    b.kind = static_cast<int>(rng.next() % 3);
    if (b.kind == 0) {
      if (posix_memalign(&b.p, b.align, b.n) != 0) b.p = nullptr;
    } else if (b.kind == 1) {
      // aligned_alloc requires size to be a multiple of the alignment (C11).
      b.n = (b.n + b.align - 1) & ~(b.align - 1);
      b.p = aligned_alloc(b.align, b.n);
    } else {
      b.p = ::operator new(b.n, std::align_val_t(b.align));
    }
    if (b.p == nullptr) bench::fail("aligned allocation returned NULL", nullptr, b.n);
    if (reinterpret_cast<uintptr_t>(b.p) % b.align != 0) bench::fail("misaligned block", b.p, b.n);
    bench::stamp(b.p, b.n);
  }
  for (auto& b : slots)
    if (b.p != nullptr) release(b);
  std::printf("aligned: %ld blocks\n", iters);
  return 0;
}
