// Workload 2: the Larson server pattern. Each thread repeatedly replaces a
// random slot of its region with a new block of random size. After every
// epoch the regions rotate between threads, so blocks allocated by one thread
// are freed by another, as in a server whose connections move between workers.
#include <barrier>
#include <thread>
#include <vector>

#include "bench_common.h"

int main(int argc, char** argv) {
  bench::Args args(argc, argv);
  int threads = static_cast<int>(args.get("threads", 2));
  long slots = args.get("slots", 4000);      // per thread
  long rounds = args.get("rounds", 200000);  // replacements per thread per epoch
  long epochs = args.get("epochs", 5);
  size_t min_size = static_cast<size_t>(args.get("min", 8));
  size_t max_size = static_cast<size_t>(args.get("max", 1000));
  args.done();

  struct Slot {
    void* p;
    size_t n;
  };
  std::vector<Slot> table(static_cast<size_t>(slots * threads));
  bench::Rng seed_rng(7);
  for (auto& s : table) {
    s.n = seed_rng.range(min_size, max_size);
    s.p = bench::xmalloc(s.n);
  }

  std::barrier sync(threads);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      bench::Rng rng(100 + t);
      for (long e = 0; e < epochs; ++e) {
        Slot* region = table.data() + ((t + e) % threads) * slots;
        for (long r = 0; r < rounds; ++r) {
          Slot& s = region[rng.next() % slots];
          bench::xfree(s.p, s.n);
          s.n = rng.range(min_size, max_size);
          s.p = bench::xmalloc(s.n);
        }
        sync.arrive_and_wait();
      }
    });
  }
  for (auto& th : pool) th.join();
  for (auto& s : table) bench::xfree(s.p, s.n);
  std::printf("larson: %d threads, %ld replacements\n", threads, threads * rounds * epochs);
  return 0;
}
