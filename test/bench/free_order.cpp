// Workload 7: many blocks freed in reverse and in random order. Reverse order
// is what a stack of scopes does; random order scatters the free lists.
#include <utility>
#include <vector>

#include "bench_common.h"

int main(int argc, char** argv) {
  bench::Args args(argc, argv);
  long count = args.get("count", 200000);
  long rounds = args.get("rounds", 20);
  size_t max_size = static_cast<size_t>(args.get("max", 256));
  args.done();

  bench::Rng rng(3);
  std::vector<std::pair<void*, size_t>> blocks(static_cast<size_t>(count));
  for (long r = 0; r < rounds; ++r) {
    for (auto& b : blocks) {
      b.second = rng.range(8, max_size);
      b.first = bench::xmalloc(b.second);
    }
    if (r % 2 == 0) {
      for (long i = count - 1; i >= 0; --i) bench::xfree(blocks[i].first, blocks[i].second);
    } else {
      for (long i = count - 1; i > 0; --i) std::swap(blocks[i], blocks[rng.next() % (i + 1)]);
      for (auto& b : blocks) bench::xfree(b.first, b.second);
    }
  }
  std::printf("free_order: %ld blocks\n", count * rounds);
  return 0;
}
