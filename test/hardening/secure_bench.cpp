// A quick allocation benchmark to compare libgranule.so with
// libgranule-secure.so (test/hardening/secure_cost.sh runs it under
// LD_PRELOAD). Prints "NAME SECONDS" per workload; no assertion on times.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace {

uint64_t rng = 88172645463325252ull;
inline uint64_t next() {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return rng;
}

template <class Fn>
void timed(const char* name, Fn fn) {
  auto t0 = std::chrono::steady_clock::now();
  fn();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%s %.4f\n", name, s);
}

volatile uintptr_t sink;

}  // namespace

int main() {
  timed("short-lived-small", [] {  // many small short-lived objects
    for (int i = 0; i < 4000000; ++i) {
      void* p = std::malloc(16 + next() % 240);
      static_cast<char*>(p)[0] = 1;
      sink = sink + uintptr_t(p);
      std::free(p);
    }
  });
  timed("random-order-free", [] {  // fill, then free in random order
    std::vector<void*> v(500000);
    for (int round = 0; round < 4; ++round) {
      for (auto& p : v) p = std::malloc(16 + next() % 1008);
      for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[next() % i]);
      for (void* p : v) std::free(p);
    }
  });
  timed("mixed-sizes", [] {  // a working set of mixed sizes up to 16 KiB
    std::vector<void*> slots(20000, nullptr);
    for (int i = 0; i < 2000000; ++i) {
      size_t k = next() % slots.size();
      std::free(slots[k]);
      size_t r = next() % 100;
      size_t n = r < 80 ? 8 + next() % 512 : r < 98 ? 512 + next() % 4096 : 4096 + next() % 12288;
      slots[k] = std::malloc(n);
      std::memset(slots[k], 0, n < 16 ? n : 16);
    }
    for (void* p : slots) std::free(p);
  });
  timed("larson-2-threads", [] {  // blocks migrate between two threads
    constexpr size_t kSlots = 10000;
    std::vector<void*> shared(kSlots * 2, nullptr);
    auto work = [&](int id) {
      uint64_t r = 1234567 + id;
      for (int i = 0; i < 1500000; ++i) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        void*& slot = shared[(r >> 8) % shared.size()];
        void* p = std::malloc(16 + r % 400);
        void* old = __atomic_exchange_n(&slot, p, __ATOMIC_ACQ_REL);
        std::free(old);
      }
    };
    std::thread a(work, 1), b(work, 2);
    a.join();
    b.join();
    for (void* p : shared) std::free(p);
  });
  timed("realloc-growth", [] {  // strings growing by appends
    for (int i = 0; i < 20000; ++i) {
      size_t n = 16;
      char* s = static_cast<char*>(std::malloc(n));
      for (size_t len = 0; len < 4000; len += 37) {
        while (len + 37 > n) s = static_cast<char*>(std::realloc(s, n *= 2));
        std::memset(s + len, 'x', 37);
      }
      std::free(s);
    }
  });
  timed("std-map-strings", [] {  // node containers with short strings
    for (int round = 0; round < 6; ++round) {
      std::map<std::string, std::string> m;
      for (int i = 0; i < 150000; ++i)
        m[std::to_string(next() % 1000000) + "-key"] = std::to_string(i);
      for (int i = 0; i < 150000; ++i) m.erase(std::to_string(next() % 1000000) + "-key");
    }
  });
  return 0;
}
