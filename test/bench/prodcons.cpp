// Workload 3: producer/consumer. Producers only allocate, consumers only
// free; blocks travel through a queue in batches. This defeats thread caches
// that assume a block is freed by the thread that allocated it.
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "bench_common.h"

namespace {

struct Block {
  void* p;
  size_t n;
};
using Batch = std::vector<Block>;

// One queue per producer/consumer pair, bounded so producers cannot run
// arbitrarily far ahead and turn the test into a pure RSS test.
class Queue {
 public:
  void push(Batch b) {
    std::unique_lock lock(mu_);
    not_full_.wait(lock, [&] { return q_.size() < 64; });
    q_.push_back(std::move(b));
    not_empty_.notify_one();
  }
  Batch pop() {
    std::unique_lock lock(mu_);
    not_empty_.wait(lock, [&] { return !q_.empty(); });
    Batch b = std::move(q_.front());
    q_.pop_front();
    not_full_.notify_one();
    return b;
  }

 private:
  std::mutex mu_;
  std::condition_variable not_empty_, not_full_;
  std::deque<Batch> q_;
};

}  // namespace

int main(int argc, char** argv) {
  bench::Args args(argc, argv);
  int pairs = static_cast<int>(args.get("threads", 2));  // producer/consumer pairs
  long blocks = args.get("blocks", 2000000);             // per producer
  long batch = args.get("batch", 256);
  size_t max_size = static_cast<size_t>(args.get("max", 512));
  args.done();

  std::vector<Queue> queues(static_cast<size_t>(pairs));
  std::vector<std::thread> pool;
  for (int i = 0; i < pairs; ++i) {
    pool.emplace_back([&, i] {
      bench::Rng rng(11 + i);
      Batch b;
      for (long k = 0; k < blocks; ++k) {
        size_t n = rng.range(8, max_size);
        b.push_back({bench::xmalloc(n), n});
        if (static_cast<long>(b.size()) == batch || k + 1 == blocks) {
          queues[i].push(std::move(b));
          b = Batch();
        }
      }
      queues[i].push(Batch());  // empty batch: end of stream
    });
    pool.emplace_back([&, i] {
      for (;;) {
        Batch b = queues[i].pop();
        if (b.empty()) break;
        for (auto& blk : b) bench::xfree(blk.p, blk.n);
      }
    });
  }
  for (auto& th : pool) th.join();
  std::printf("prodcons: %d pairs, %ld blocks\n", pairs, pairs * blocks);
  return 0;
}
