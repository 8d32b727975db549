#include "purge.h"

#include <atomic>
#include <cstdint>

#include "heap.h"
#include "options.h"
#include "os/os.h"

namespace granule {
namespace {

std::atomic<uint32_t> g_epoch{0};  // futex word: bumped by notify
std::atomic<bool> g_pending{false};
std::atomic<int> g_thread{0};  // 0: none, 1: starting/running, 2: could not start
std::atomic<bool> g_allowed{false};
std::atomic<bool> g_stop{false};
std::atomic<bool> g_soon{false};        // purge_notify_soon: pass shortly, not after the interval
std::atomic<uint32_t> g_soon_epoch{0};  // futex word: bumped by notify_soon

// Waiters on `word` (a futex word of this file) look again.
void wake_all(std::atomic<uint32_t>& word) {
  word.fetch_add(1, std::memory_order_release);
  os::wake(reinterpret_cast<const uint32_t*>(&word));
}

uint32_t interval_ms() {
  long delay = option(GR_OPTION_PURGE_DELAY);
  if (delay <= 0) return 1000;
  // Slices may wait only a quarter of the delay (segment_purge).
  long eighth = delay / 8;
  return uint32_t(eighth < 10 ? 10 : eighth > 1000 ? 1000 : eighth);
}

void purge_thread(void*) {
  for (;;) {
    if (g_stop.exchange(false, std::memory_order_acq_rel)) {
      g_thread.store(0, std::memory_order_release);
      return;
    }
    uint32_t epoch = g_epoch.load(std::memory_order_acquire);
    if (!g_pending.load(std::memory_order_acquire) || option(GR_OPTION_PURGE_DELAY) < 0) {
      // Idle, or the program said never: no periodic wake-ups (a changed
      // delay wakes the thread, purge_options_changed).
      os::wait_on(reinterpret_cast<const uint32_t*>(&g_epoch), epoch, 60 * 1000);
      continue;
    }
    if (g_soon.exchange(false, std::memory_order_acq_rel)) {
      // Give the program a moment to take the block back before it goes.
      os::sleep_ms(kPurgeSoonMs);
    } else {
      // Only a notify_soon ends this wait early.
      uint32_t soon_epoch = g_soon_epoch.load(std::memory_order_acquire);
      if (g_soon.load(std::memory_order_acquire)) continue;
      os::wait_on(reinterpret_cast<const uint32_t*>(&g_soon_epoch), soon_epoch, interval_ms());
      if (g_soon.load(std::memory_order_acquire)) continue;
    }
    g_pending.store(false, std::memory_order_release);
    if (heap_purge_all(false)) g_pending.store(true, std::memory_order_release);
  }
}

}  // namespace

void purge_allow_thread() { g_allowed.store(true, std::memory_order_release); }

void purge_stop() {
  if (g_thread.load(std::memory_order_acquire) != 1) return;
  g_stop.store(true, std::memory_order_release);
  wake_all(g_epoch);
}

void purge_after_fork_child() {
  g_stop.store(false, std::memory_order_relaxed);
  g_thread.store(0, std::memory_order_relaxed);
  g_pending.store(true, std::memory_order_relaxed);
}

void purge_options_changed() {
  // Whatever the thread waits on, it looks again under the new options.
  wake_all(g_epoch);
  wake_all(g_soon_epoch);
  purge_notify();  // marks work pending, or starts the thread
}

void purge_notify_soon() {
  g_soon.store(true, std::memory_order_release);
  wake_all(g_soon_epoch);
  purge_notify();  // wakes an idle thread, or starts one
}

void purge_notify() {
  if (!g_pending.load(std::memory_order_relaxed) &&
      !g_pending.exchange(true, std::memory_order_acq_rel)) {
    wake_all(g_epoch);
  }
  if (g_thread.load(std::memory_order_relaxed) == 0 &&
      (g_allowed.load(std::memory_order_acquire) || os::threads_before_start()) &&
      option(GR_OPTION_PURGE_THREAD) && option(GR_OPTION_PURGE_DELAY) > 0) {
    int expected = 0;
    if (g_thread.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) {
      if (!os::start_thread(purge_thread, nullptr)) g_thread.store(2, std::memory_order_relaxed);
    }
  }
}

}  // namespace granule
