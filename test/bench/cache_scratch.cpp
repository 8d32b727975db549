// Workload 4: Hoard's passive false sharing ("cache-scratch"). The main
// thread allocates one small object per worker and hands it over; each worker
// frees it, then repeatedly allocates an object of the same size and writes to
// it. An allocator that gives the freed (shared-line) memory back to the
// worker makes the workers' objects share cache lines.
#include <thread>
#include <vector>

#include "bench_common.h"

int main(int argc, char** argv) {
  bench::Args args(argc, argv);
  int threads = static_cast<int>(args.get("threads", 2));
  long iters = args.get("iters", 2000);
  long writes = args.get("writes", 2000);
  size_t size = static_cast<size_t>(args.get("size", 8));
  args.done();

  std::vector<char*> handed(static_cast<size_t>(threads));
  for (auto& p : handed) p = static_cast<char*>(bench::xmalloc(size));

  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      bench::xfree(handed[t], size);
      for (long i = 0; i < iters; ++i) {
        bench::write_private_object(size, writes);
      }
    });
  }
  for (auto& th : pool) th.join();
  std::printf("cache_scratch: %d threads\n", threads);
  return 0;
}
