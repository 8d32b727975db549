// A small lock for slow paths only (slab hand-offs, segment bookkeeping,
// registries). Never taken on a malloc/free fast path. A plain word, so it
// can be reset in a fork child: 0 free, 1 held, 2 held and a waiter may
// sleep. A waiter spins briefly, then sleeps in the kernel: with more
// threads than cores a holder that lost its CPU gets it back at once,
// where waiters that only yielded took turns spinning before it.
#pragma once

#include <atomic>
#include <cstdint>

#include "os/os.h"

namespace granule {

class SlowLock {
 public:
  constexpr SlowLock() = default;
  void lock() {
    uint32_t c = 0;
    if (__builtin_expect(word_.compare_exchange_strong(c, 1, std::memory_order_acquire,
                                                       std::memory_order_relaxed),
                         1))
      return;
    lock_contended(c);
  }
  bool try_lock() {
    uint32_t c = 0;
    return !word_.load(std::memory_order_relaxed) &&
           word_.compare_exchange_strong(c, 1, std::memory_order_acquire,
                                         std::memory_order_relaxed);
  }
  void unlock() {
    // acq_rel: a sleeper's exchange (acq_rel too) comes before, so what it
    // saw before sleeping (lock_wait's means) this thread sees.
    if (word_.exchange(0, std::memory_order_acq_rel) == 2) os::lock_wake(raw());
  }
  // Only for a fork child, where the holder no longer exists.
  void reset() { word_.store(0, std::memory_order_relaxed); }

 private:
  const uint32_t* raw() const { return reinterpret_cast<const uint32_t*>(&word_); }
  // c: the value the first attempt saw.
  void lock_contended(uint32_t c) {
    for (unsigned spins = 0; spins < 128 && c != 2; ++spins) {
      __builtin_ia32_pause();
      c = word_.load(std::memory_order_relaxed);
      if (c == 0 &&
          word_.compare_exchange_weak(c, 1, std::memory_order_acquire, std::memory_order_relaxed))
        return;
    }
    // From here the word says 2 while anyone may sleep; whoever takes it
    // this way leaves it at 2, so its unlock wakes the next sleeper.
    if (c != 2) c = word_.exchange(2, std::memory_order_acq_rel);
    while (c != 0) {
      os::lock_wait(raw(), 2);
      c = word_.exchange(2, std::memory_order_acq_rel);
    }
  }

  std::atomic<uint32_t> word_{0};
};

class LockGuard {
 public:
  explicit LockGuard(SlowLock& l) : l_(l) { l_.lock(); }
  ~LockGuard() { l_.unlock(); }
  LockGuard(const LockGuard&) = delete;
  LockGuard& operator=(const LockGuard&) = delete;

 private:
  SlowLock& l_;
};

}  // namespace granule
