// Workload 6: thread churn. Short-lived threads are created and destroyed in
// waves; each swaps blocks into shared slots and frees whatever the previous
// occupant (usually a thread that has already exited) left there. This
// exercises thread-exit cleanup and frees that arrive after the owner died.
#include <atomic>
#include <thread>
#include <vector>

#include "bench_common.h"

namespace {

struct Block {
  size_t n;
  // The size lives in the block itself so a slot is a single atomic pointer.
};

Block* make(bench::Rng& rng, size_t max_size) {
  size_t n = rng.range(sizeof(Block) + 16, max_size);
  auto* b = static_cast<Block*>(std::malloc(n));
  if (b == nullptr) bench::fail("allocation returned NULL", nullptr, n);
  b->n = n;
  bench::stamp(reinterpret_cast<char*>(b) + sizeof(Block), n - sizeof(Block));
  return b;
}

void release(Block* b) {
  bench::check(reinterpret_cast<char*>(b) + sizeof(Block), b->n - sizeof(Block));
  std::free(b);
}

}  // namespace

int main(int argc, char** argv) {
  bench::Args args(argc, argv);
  int threads = static_cast<int>(args.get("threads", 2));
  long waves = args.get("waves", 200);
  long ops = args.get("ops", 5000);  // slot swaps per thread
  long slots = args.get("slots", 2000);
  size_t max_size = static_cast<size_t>(args.get("max", 2000));
  args.done();

  std::vector<std::atomic<Block*>> table(static_cast<size_t>(slots));
  for (auto& s : table) s.store(nullptr);

  for (long w = 0; w < waves; ++w) {
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, w, t] {
        bench::Rng rng(static_cast<uint64_t>(w * 1000 + t));
        for (long i = 0; i < ops; ++i) {
          Block* old = table[rng.next() % slots].exchange(make(rng, max_size));
          if (old != nullptr) release(old);
        }
      });
    }
    for (auto& th : pool) th.join();
  }
  for (auto& s : table)
    if (Block* b = s.load()) release(b);
  std::printf("thread_churn: %ld threads created\n", waves * threads);
  return 0;
}
