// Linux: mmap / madvise / munmap. Reserved memory is mapped read-write with
// MAP_NORESERVE, so "commit" is bookkeeping and a page becomes resident when
// first touched; decommit is MADV_DONTNEED so RSS drops at once (MADV_FREE
// would leave it high in every monitoring tool).
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include "os/os.h"
#include "os/vdso_linux.h"

extern char** environ;

namespace granule::os {
namespace {

Info g_info = {4096, 4096};
std::atomic<bool> g_info_ready{false};
std::atomic<long> g_fail_countdown{0};

// True when the test hook says this reserve/commit must fail.
bool injected_failure() {
  long n = g_fail_countdown.load(std::memory_order_relaxed);
  if (n <= 0) return false;
  if (g_fail_countdown.fetch_sub(1, std::memory_order_relaxed) == 1) {
    return true;
  }
  return false;
}

}  // namespace

const Info& info() {
  if (!g_info_ready.load(std::memory_order_acquire)) {
    long ps = sysconf(_SC_PAGESIZE);
    if (ps > 0) g_info.page_size = size_t(ps);
    g_info.granularity = g_info.page_size;
    g_info_ready.store(true, std::memory_order_release);
  }
  return g_info;
}

void fail_after(long n) { g_fail_countdown.store(n, std::memory_order_relaxed); }

namespace {
// Where the next aligned reservation probably fits: just below the last one
// (the kernel hands out addresses top-down), so one mmap usually suffices.
std::atomic<uintptr_t> g_hint{0};
}  // namespace

void* reserve(size_t size, size_t alignment) {
  if (injected_failure()) return nullptr;
  const int prot = PROT_READ | PROT_WRITE;
  const int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
  uintptr_t hint = g_hint.load(std::memory_order_relaxed);
  if (hint > size) {
    uintptr_t want = (hint - size) & ~(uintptr_t(alignment) - 1);
    void* p = mmap(reinterpret_cast<void*>(want), size, prot, flags, -1, 0);
    if (p == reinterpret_cast<void*>(want)) {
      g_hint.store(want, std::memory_order_relaxed);
      return p;
    }
    if (p != MAP_FAILED) munmap(p, size);
  }
  void* p = mmap(nullptr, size, prot, flags, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  if ((uintptr_t(p) & (alignment - 1)) == 0) {
    g_hint.store(uintptr_t(p), std::memory_order_relaxed);
    return p;
  }
  munmap(p, size);
  // Over-reserve and trim both ends; trimming creates no extra mappings.
  size_t over = size + alignment;
  if (over < size) return nullptr;
  char* q = static_cast<char*>(mmap(nullptr, over, prot, flags, -1, 0));
  if (q == MAP_FAILED) return nullptr;
  uintptr_t aligned = (uintptr_t(q) + alignment - 1) & ~(uintptr_t(alignment) - 1);
  size_t head = aligned - uintptr_t(q);
  size_t tail = over - head - size;
  if (head) munmap(q, head);
  if (tail) munmap(reinterpret_cast<char*>(aligned) + size, tail);
  g_hint.store(aligned, std::memory_order_relaxed);
  return reinterpret_cast<void*>(aligned);
}

void release(void* p, size_t size) { munmap(p, size); }

bool can_split() { return true; }

bool threads_before_start() { return false; }

// mremap moves page-table entries, so pages already touched stay resident and
// are not faulted in again.
bool move_pages(void* from, void* to, size_t size) {
  return mremap(from, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, to) != MAP_FAILED;
}

bool commit(void*, size_t) { return !injected_failure(); }

void decommit(void* p, size_t size) { madvise(p, size, MADV_DONTNEED); }

// Below this many pages the system calls cost more than the memset saves.
constexpr size_t kZeroQueryPages = 64;
// Pages written or dropped as one: a stretch is judged by most of its pages.
constexpr size_t kZeroStretchPages = 256;
// Pages per mincore call (its vector lives on the stack): a call costs about
// as much as reading a thousand pages' residency, so few big calls.
constexpr size_t kZeroWindowPages = 1024;

// A run of stretches treated alike: one madvise or memset for all of them.
// Dropping fails on locked memory: then the run is written.
void zero_run(char* q, size_t bytes, bool drop) {
  if (bytes == 0) return;
  if (!drop || madvise(q, bytes, MADV_DONTNEED) != 0) std::memset(q, 0, bytes);
}

void zero(void* p, size_t size) {
  const size_t ps = info().page_size;
  auto* b = static_cast<char*>(p);
  uintptr_t lo = (uintptr_t(b) + ps - 1) & ~(ps - 1);
  uintptr_t hi = (uintptr_t(b) + size) & ~(ps - 1);
  if (hi <= lo || (hi - lo) / ps < kZeroQueryPages) {
    std::memset(p, 0, size);
    return;
  }
  std::memset(b, 0, lo - uintptr_t(b));
  std::memset(reinterpret_cast<char*>(hi), 0, uintptr_t(b) + size - hi);
  unsigned char vec[kZeroWindowPages];
  char* run = reinterpret_cast<char*>(lo);
  bool run_drop = false;
  for (uintptr_t at = lo; at < hi;) {
    size_t pages = std::min((hi - at) / ps, kZeroWindowPages);
    bool known = mincore(reinterpret_cast<void*>(at), pages * ps, vec) == 0;
    for (size_t first = 0; first < pages; first += kZeroStretchPages) {
      size_t n = std::min(pages - first, kZeroStretchPages), resident = n;
      if (known) {
        resident = 0;
        for (size_t i = first; i < first + n; ++i) resident += vec[i] & 1;
      }
      // A page mincore calls absent may still hold data (swapped out), so a
      // stretch is either written whole or dropped whole.
      bool drop = resident * 2 < n;
      char* q = reinterpret_cast<char*>(at + first * ps);
      if (drop != run_drop) {
        zero_run(run, size_t(q - run), run_drop);
        run = q;
        run_drop = drop;
      }
    }
    at += pages * ps;
  }
  zero_run(run, size_t(reinterpret_cast<char*>(hi) - run), run_drop);
}

void protect_none(void* p, size_t size) { mprotect(p, size, PROT_NONE); }
void protect_rw(void* p, size_t size) { mprotect(p, size, PROT_READ | PROT_WRITE); }

void advise_huge(void* p, size_t size) {
#ifdef MADV_HUGEPAGE
  madvise(p, size, MADV_HUGEPAGE);
#endif
}

uint64_t now_ms() {
  // The vDSO entry, looked up on first use (1: none found, use libc's).
  // Threads racing to look it up find the same answer.
  static std::atomic<uintptr_t> vdso_clock{0};
  uintptr_t f = vdso_clock.load(std::memory_order_relaxed);
  if (f == 0) {
    VdsoClock found = vdso_clock_gettime();
    f = found ? reinterpret_cast<uintptr_t>(found) : 1;
    vdso_clock.store(f, std::memory_order_relaxed);
  }
  struct timespec ts;
  if (f == 1 || reinterpret_cast<VdsoClock>(f)(CLOCK_MONOTONIC, &ts) != 0) {
    clock_gettime(CLOCK_MONOTONIC, &ts);
  }
  return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
}

void yield() { sched_yield(); }

// A futex wait on a word nobody wakes: nanosleep would fault in the page of
// libc that clock_gettime's caller avoids (vdso_linux.cpp). A signal may
// end the wait early; callers only pace themselves with it.
void sleep_ms(uint32_t ms) {
  uint32_t word = 0;
  wait_on(&word, 0, ms);
}

namespace {
// A private futex call that leaves errno as it was (callers are malloc).
void futex(const uint32_t* word, int op, uint32_t value, const struct timespec* timeout) {
  int saved = errno;
  syscall(SYS_futex, word, op, value, timeout, nullptr, 0);
  errno = saved;
}
}  // namespace

void wait_on(const uint32_t* word, uint32_t expected, uint32_t timeout_ms) {
  struct timespec ts = {time_t(timeout_ms / 1000), long(timeout_ms % 1000) * 1000000L};
  futex(word, FUTEX_WAIT_PRIVATE, expected, &ts);
}

void wake(const uint32_t* word) { futex(word, FUTEX_WAKE_PRIVATE, 0x7fffffff, nullptr); }

void lock_wait(const uint32_t* word, uint32_t expected) {
  futex(word, FUTEX_WAIT_PRIVATE, expected, nullptr);
}

void lock_wake(const uint32_t* word) { futex(word, FUTEX_WAKE_PRIVATE, 1, nullptr); }

// membarrier's expedited command interrupts only the CPUs running this
// process's threads. It needs registering (Linux 4.14): once, and again if a
// call says this process is not (a kernel that does not carry it into a fork
// child). A seccomp filter may forbid it: then no barrier, for good.
bool process_barrier() {
  static std::atomic<bool> unavailable{false};
  if (unavailable.load(std::memory_order_relaxed)) return false;
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0) return true;
    if (errno != EPERM ||
        syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) != 0)
      break;
  }
  unavailable.store(true, std::memory_order_relaxed);
  return false;
}

namespace {
struct ThreadStart {
  void (*fn)(void*);
  void* arg;
};
void* thread_trampoline(void* raw) {
  auto* start = static_cast<ThreadStart*>(raw);
  start->fn(start->arg);
  return nullptr;
}
}  // namespace

bool start_thread(void (*fn)(void*), void* arg) {
  // One helper thread per process lifetime at most, so a static block is
  // enough and nothing is allocated through the allocator.
  static ThreadStart start;
  start = {fn, arg};
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);  // the new thread inherits "all blocked"
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  pthread_t t;
  int rc = pthread_create(&t, &attr, thread_trampoline, &start);
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (rc == 0) {
#if defined(__GLIBC__)
    pthread_setname_np(t, "granule-purge");
#endif
  }
  return rc == 0;
}

const char* getenv_raw(const char* name) {
  char** env = environ;
  if (!env) return nullptr;
  size_t n = strlen(name);
  for (; *env; ++env) {
    if (strncmp(*env, name, n) == 0 && (*env)[n] == '=') return *env + n + 1;
  }
  return nullptr;
}

bool environment_ready() { return environ != nullptr; }

namespace {
std::atomic<int> g_stderr_fd{2};
}

void keep_stderr() {
  int saved = errno;
  int fd = fcntl(2, F_DUPFD_CLOEXEC, 100);
  if (fd >= 0) g_stderr_fd.store(fd, std::memory_order_relaxed);
  errno = saved;
}

void write_stderr(const char* s, size_t n) {
  int saved = errno;
  int fd = g_stderr_fd.load(std::memory_order_relaxed);
  while (n > 0) {
    ssize_t w = write(fd, s, n);
    if (w <= 0) {
      if (w < 0 && errno == EINTR) continue;
      break;
    }
    s += w;
    n -= size_t(w);
  }
  errno = saved;
}

uint64_t random_seed() {
  uint64_t v = 0;
  int saved = errno;
  if (getrandom(&v, sizeof v, GRND_NONBLOCK) != sizeof v) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    v = uint64_t(ts.tv_nsec) * 0x9E3779B97F4A7C15ull ^ uint64_t(getpid()) << 32 ^ uintptr_t(&v);
  }
  errno = saved;
  return v | 1;
}

uint32_t process_id() { return uint32_t(getpid()); }

namespace {
pthread_key_t g_exit_key;
std::atomic<bool> g_exit_key_ready{false};
}  // namespace

void thread_exit_register(void (*fn)(void*)) {
  if (pthread_key_create(&g_exit_key, fn) == 0) {
    g_exit_key_ready.store(true, std::memory_order_release);
  }
}

void thread_exit_arm(void* value) {
  if (g_exit_key_ready.load(std::memory_order_acquire)) pthread_setspecific(g_exit_key, value);
}

void atfork_register(void (*prepare)(), void (*parent)(), void (*child)()) {
  pthread_atfork(prepare, parent, child);
}

}  // namespace granule::os
