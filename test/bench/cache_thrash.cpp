// Workload 5: Hoard's active false sharing ("cache-thrash"). Every thread
// repeatedly allocates a small object, writes to it many times and frees it.
// An allocator that carves objects for different threads out of the same
// cache line makes the threads fight over it.
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

  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (long i = 0; i < iters; ++i) {
        bench::write_private_object(size, writes);
      }
    });
  }
  for (auto& th : pool) th.join();
  std::printf("cache_thrash: %d threads\n", threads);
  return 0;
}
