// Workload 8: buffers grown by repeated realloc, as string builders and
// vectors written in C do. Checks that the contents survive each move.
#include <vector>

#include "bench_common.h"

int main(int argc, char** argv) {
  bench::Args args(argc, argv);
  long buffers = args.get("buffers", 2000);
  long rounds = args.get("rounds", 10);
  size_t max_size = static_cast<size_t>(args.get("max", 65536));
  args.done();

  bench::Rng rng(5);
  for (long r = 0; r < rounds; ++r) {
    std::vector<unsigned char*> bufs(static_cast<size_t>(buffers), nullptr);
    std::vector<size_t> sizes(static_cast<size_t>(buffers), 0);
    bool growing = true;
    while (growing) {
      growing = false;
      for (long i = 0; i < buffers; ++i) {
        if (sizes[i] >= max_size) continue;
        growing = true;
        // Mixed growth steps: small appends (often in place) and doublings.
        size_t n = sizes[i] == 0 ? 16 : (rng.next() % 4 == 0 ? sizes[i] * 2 : sizes[i] + 24);
        auto* p = static_cast<unsigned char*>(std::realloc(bufs[i], n));
        if (p == nullptr) bench::fail("realloc returned NULL", bufs[i], n);
        // Each byte holds a function of its index, so a lost copy shows up.
        for (size_t k = 0; k < sizes[i]; k += 61)
          if (p[k] != static_cast<unsigned char>(k * 7 + i)) bench::fail("realloc lost data", p, n);
        for (size_t k = sizes[i]; k < n; ++k) p[k] = static_cast<unsigned char>(k * 7 + i);
        bufs[i] = p;
        sizes[i] = n;
      }
    }
    for (long i = 0; i < buffers; ++i) std::free(bufs[i]);
  }
  std::printf("realloc_growth: %ld buffers grown to %zu bytes\n", buffers * rounds, max_size);
  return 0;
}
