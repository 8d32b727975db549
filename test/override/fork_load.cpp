// fork() under load: 4 threads allocate, hand blocks to each other and free
// while the main thread forks 200 times. Every child checks that only its own
// heap is still live (the others' owners did not survive the fork and their
// heaps were abandoned), frees blocks the vanished threads had allocated,
// allocates and frees in all size ranges and in a new thread, and exits 0.
// A deadlock in parent or child ends in Meson's timeout.
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "granule.h"
#include "preload.h"

namespace {

constexpr int kThreads = 4;
constexpr int kForks = 200;
constexpr int kSlots = 1024;

// Blocks in flight between threads: [0] = size, then a pattern of the size.
std::atomic<uint64_t*> g_slots[kSlots];
std::atomic<bool> g_stop{false};
// Set while a child runs: the workers only matter at the moment of fork(),
// and four of them beside the child on two cores made each child take a
// quarter of a second.
std::atomic<bool> g_pause{false};

uint64_t* make_block(size_t words) {
  auto* b = static_cast<uint64_t*>(malloc(words * sizeof(uint64_t)));
  if (!b) return nullptr;
  b[0] = words;
  for (size_t i = 1; i < words; ++i) b[i] = words * 1000 + i;
  return b;
}

bool block_ok(const uint64_t* b) {
  size_t words = b[0];
  for (size_t i = 1; i < words; ++i)
    if (b[i] != words * 1000 + i) return false;
  return true;
}

std::atomic<long> g_bad_blocks{0};

void worker(unsigned seed) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  while (!g_stop.load(std::memory_order_relaxed)) {
    if (g_pause.load(std::memory_order_relaxed)) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      continue;
    }
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    // Mostly small, some medium, now and then a huge block (its own mapping).
    size_t words = x % 500 == 0 ? (300u << 10) : x % 10 == 0 ? 2 + x % 4000 : 2 + x % 60;
    uint64_t* b = make_block(words);
    uint64_t* old = g_slots[(x >> 20) % kSlots].exchange(b);
    if (old) {
      if (!block_ok(old)) g_bad_blocks++;
      free(old);
    }
  }
}

// What a child does; its exit status says what went wrong.
int child_main() {
  gr_stats_t st;
  gr_stats_get(&st);
  if (st.heaps != 1) return 10;  // the vanished threads' heaps were not abandoned
  // Free what the vanished threads allocated (their slabs are now without
  // owner; these frees must hand the memory back, not strand it).
  int taken = 0;
  for (auto& slot : g_slots) {
    uint64_t* b = slot.exchange(nullptr);
    if (!b) continue;
    if (!block_ok(b)) return 11;
    free(b);
    ++taken;
  }
  std::vector<uint64_t*> mine;
  for (size_t i = 0; i < 3000; ++i) mine.push_back(make_block(2 + (i * 13) % 300));
  mine.push_back(make_block(300 << 10));  // huge (own mapping)
  for (uint64_t* b : mine)
    if (!b || !block_ok(b)) return 12;
  for (uint64_t* b : mine) free(b);
  // A new thread in the child reuses an abandoned heap.
  bool thread_ok = false;
  std::thread t([&] {
    uint64_t* b = make_block(100);
    thread_ok = b && block_ok(b) && granule_owns(b);
    free(b);
  });
  t.join();
  if (!thread_ok) return 13;
  gr_stats_get(&st);
  if (st.heaps > 2) return 14;
  return taken >= 0 ? 0 : 15;
}

}  // namespace

int main() {
  if (!granule_owns_fn()) {
    printf("not running on granule\n");
    return 1;
  }
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) threads.emplace_back(worker, unsigned(i + 1));
  int failed_children = 0;
  for (int i = 0; i < kForks; ++i) {
    // Let the workers run before each fork, so it finds them mid-allocation.
    g_pause = false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
      perror("fork");
      return 1;
    }
    if (pid == 0) exit(child_main());
    g_pause = true;
    int status = 0;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      printf("child %d failed: status %#x\n", i, status);
      ++failed_children;
    }
    // The parent keeps allocating between forks too.
    free(make_block(2 + i));
  }
  g_stop = true;
  for (auto& t : threads) t.join();
  for (auto& slot : g_slots) {
    if (uint64_t* b = slot.exchange(nullptr)) {
      if (!block_ok(b)) g_bad_blocks++;
      free(b);
    }
  }
  printf("fork_load: %d forks, %d failed children, %ld corrupted blocks\n", kForks, failed_children,
         g_bad_blocks.load());
  return failed_children == 0 && g_bad_blocks == 0 ? 0 : 1;
}
