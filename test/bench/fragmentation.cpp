// Workload 12: fragmentation. Build a heap of mixed sizes, free 90 % of it
// at random, then allocate blocks of other sizes. An allocator that cannot
// reuse the holes (or return the emptied pages) shows a high peak RSS.
#include <vector>

#include "bench_common.h"

int main(int argc, char** argv) {
  bench::Args args(argc, argv);
  long count = args.get("count", 500000);
  long rounds = args.get("rounds", 3);
  args.done();

  struct Block {
    void* p = nullptr;
    size_t n = 0;
  };
  bench::Rng rng(19);
  std::vector<Block> heap(static_cast<size_t>(count));
  for (long r = 0; r < rounds; ++r) {
    for (auto& b : heap) {
      if (b.p != nullptr) bench::xfree(b.p, b.n);
      // Mostly small, some medium, a few page-sized blocks.
      uint64_t pick = rng.next() % 100;
      b.n = pick < 80   ? rng.range(16, 128)
            : pick < 97 ? rng.range(129, 2048)
                        : rng.range(2049, 16384);
      b.p = bench::xmalloc(b.n);
    }
    for (auto& b : heap) {
      if (rng.next() % 10 != 0) {
        bench::xfree(b.p, b.n);
        b.p = nullptr;
      }
    }
    // Refill with sizes that fit none of the freed classes well.
    for (auto& b : heap) {
      if (b.p == nullptr && rng.next() % 3 == 0) {
        b.n = rng.range(200, 600) * (1 + rng.next() % 3);
        b.p = bench::xmalloc(b.n);
      }
    }
  }
  for (auto& b : heap)
    if (b.p != nullptr) bench::xfree(b.p, b.n);
  std::printf("fragmentation: %ld rounds of %ld blocks\n", rounds, count);
  return 0;
}
