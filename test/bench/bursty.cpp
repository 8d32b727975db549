// Workload 13: bursts of allocation separated by idle periods. The driver
// samples RSS over time: an allocator should hand memory back during the idle
// periods even though the program makes no further calls.
#include <time.h>

#include <vector>

#include "bench_common.h"

int main(int argc, char** argv) {
  bench::Args args(argc, argv);
  long bursts = args.get("bursts", 5);
  long mib = args.get("mib", 200);  // allocated per burst
  long idle_ms = args.get("idle_ms", 500);
  args.done();

  bench::Rng rng(23);
  for (long b = 0; b < bursts; ++b) {
    struct Block {
      void* p;
      size_t n;
    };
    std::vector<Block> blocks;
    size_t total = 0;
    while (total < static_cast<size_t>(mib) << 20) {
      size_t n = rng.next() % 16 == 0 ? rng.range(4096, 65536) : rng.range(16, 512);
      blocks.push_back({bench::xmalloc(n), n});
      total += n;
    }
    // Keep a few survivors so the heap cannot be dropped wholesale.
    std::vector<Block> keep;
    for (auto& blk : blocks) {
      if (rng.next() % 1000 == 0)
        keep.push_back(blk);
      else
        bench::xfree(blk.p, blk.n);
    }
    blocks.clear();
    blocks.shrink_to_fit();
    timespec idle{idle_ms / 1000, (idle_ms % 1000) * 1000000};
    nanosleep(&idle, nullptr);
    for (auto& blk : keep) bench::xfree(blk.p, blk.n);
  }
  std::printf("bursty: %ld bursts of %ld MiB\n", bursts, mib);
  return 0;
}
