// A tiny lock for slow paths only (slab hand-offs, segment bookkeeping,
// registries). Never taken on a malloc/free fast path. A plain word, so it
// can be reset in a fork child.
#pragma once

#include <atomic>
#include <cstdint>

#include "os/os.h"

namespace granule {

class SpinLock {
 public:
  constexpr SpinLock() = default;
  void lock() {
    for (unsigned spins = 0;; ++spins) {
      if (!word_.exchange(1, std::memory_order_acquire)) return;
      while (word_.load(std::memory_order_relaxed)) {
        if (++spins > 64) {
          os::yield();
          spins = 0;
        } else {
          __builtin_ia32_pause();
        }
      }
    }
  }
  bool try_lock() {
    return !word_.load(std::memory_order_relaxed) && !word_.exchange(1, std::memory_order_acquire);
  }
  void unlock() { word_.store(0, std::memory_order_release); }
  // Only for a fork child, where the holder no longer exists.
  void reset() { word_.store(0, std::memory_order_relaxed); }

 private:
  std::atomic<uint32_t> word_{0};
};

class LockGuard {
 public:
  explicit LockGuard(SpinLock& l) : l_(l) { l_.lock(); }
  ~LockGuard() { l_.unlock(); }
  LockGuard(const LockGuard&) = delete;
  LockGuard& operator=(const LockGuard&) = delete;

 private:
  SpinLock& l_;
};

}  // namespace granule
