// Workload 9: large blocks from 64 KiB to 32 MiB, allocated and freed with a
// few kept alive. A naive allocator maps and unmaps every one of them.
#include <vector>

#include "bench_common.h"

int main(int argc, char** argv) {
  bench::Args args(argc, argv);
  long iters = args.get("iters", 3000);
  size_t min_size = static_cast<size_t>(args.get("min", 64 << 10));
  size_t max_size = static_cast<size_t>(args.get("max", 32 << 20));
  long live = args.get("live", 4);
  args.done();

  bench::Rng rng(9);
  struct Block {
    void* p = nullptr;
    size_t n = 0;
  };
  std::vector<Block> slots(static_cast<size_t>(live));
  for (long i = 0; i < iters; ++i) {
    Block& b = slots[rng.next() % live];
    if (b.p != nullptr) bench::xfree(b.p, b.n);
    // Log-uniform sizes: as many 64 KiB-class blocks as 16 MiB-class ones.
    int shift = static_cast<int>(rng.next() % 10);
    size_t lo = min_size << shift;
    if (lo > max_size) lo = max_size;
    b.n = rng.range(lo, (lo * 2 < max_size) ? lo * 2 : max_size);
    b.p = bench::xmalloc(b.n);
  }
  for (auto& b : slots)
    if (b.p != nullptr) bench::xfree(b.p, b.n);
  std::printf("large_blocks: %ld blocks\n", iters);
  return 0;
}
