// Windows: VirtualAlloc / VirtualFree / VirtualProtect. Address space is
// reserved with MEM_RESERVE (64 KiB granularity) and pages are committed and
// decommitted explicitly, so the committed size follows what the core uses.
//
// Everything here calls kernel32 only: no CRT allocation (the C runtime may be
// the very thing we replace), no emutls, nothing that could re-enter malloc.
// Functions that may run inside a program's malloc keep GetLastError intact.
#define WIN32_LEAN_AND_MEAN
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>

#include <intrin.h>

#include <atomic>

#include "os/os.h"
#include "os/tls_windows.h"

namespace granule::os {
namespace {

Info g_info = {4096, 65536};
INIT_ONCE g_info_once = INIT_ONCE_STATIC_INIT;

BOOL CALLBACK init_info(PINIT_ONCE, PVOID, PVOID*) {
  SYSTEM_INFO si;
  GetSystemInfo(&si);
  if (si.dwPageSize) g_info.page_size = si.dwPageSize;
  if (si.dwAllocationGranularity) g_info.granularity = si.dwAllocationGranularity;
  return TRUE;
}

std::atomic<long> g_fail_countdown{0};

// True when the test hook says this reserve/commit must fail.
bool injected_failure() {
  long n = g_fail_countdown.load(std::memory_order_relaxed);
  if (n <= 0) return false;
  return g_fail_countdown.fetch_sub(1, std::memory_order_relaxed) == 1;
}

// Restores GetLastError on scope exit: malloc must not change it.
class KeepLastError {
 public:
  KeepLastError() : saved_(GetLastError()) {}
  ~KeepLastError() { SetLastError(saved_); }
  KeepLastError(const KeepLastError&) = delete;
  KeepLastError& operator=(const KeepLastError&) = delete;

 private:
  DWORD saved_;
};

}  // namespace

const Info& info() {
  InitOnceExecuteOnce(&g_info_once, init_info, nullptr, nullptr);
  return g_info;
}

void fail_after(long n) { g_fail_countdown.store(n, std::memory_order_relaxed); }

void* reserve(size_t size, size_t alignment) {
  if (injected_failure()) return nullptr;
  KeepLastError keep;
  const size_t gran = info().granularity;
  if (alignment <= gran) return VirtualAlloc(nullptr, size, MEM_RESERVE, PAGE_NOACCESS);
  // A reservation can't be trimmed, so over-reserve to find an aligned
  // address, give the whole range back and reserve exactly there. Another
  // thread may take the hole in between: retry a few times.
  const size_t over = size + alignment - gran;
  if (over < size) return nullptr;
  for (int attempt = 0; attempt < 16; ++attempt) {
    void* probe = VirtualAlloc(nullptr, over, MEM_RESERVE, PAGE_NOACCESS);
    if (!probe) return nullptr;
    uintptr_t aligned = (uintptr_t(probe) + alignment - 1) & ~(uintptr_t(alignment) - 1);
    VirtualFree(probe, 0, MEM_RELEASE);
    void* p = VirtualAlloc(reinterpret_cast<void*>(aligned), size, MEM_RESERVE, PAGE_NOACCESS);
    if (p == reinterpret_cast<void*>(aligned)) return p;
    if (p) VirtualFree(p, 0, MEM_RELEASE);
  }
  return nullptr;
}

// `p` must be an address returned by reserve(): Windows releases whole
// reservations only (size is implied).
void release(void* p, size_t) {
  KeepLastError keep;
  VirtualFree(p, 0, MEM_RELEASE);
}

bool can_split() { return false; }

bool threads_before_start() { return true; }

bool move_pages(void*, void*, size_t) { return false; }

bool commit(void* p, size_t size) {
  if (injected_failure()) return false;
  KeepLastError keep;
  return VirtualAlloc(p, size, MEM_COMMIT, PAGE_READWRITE) != nullptr;
}

void decommit(void* p, size_t size) {
  KeepLastError keep;
  VirtualFree(p, size, MEM_DECOMMIT);
}

// Residency would need QueryWorkingSetEx; zeroing writes every page. rep
// stosb, not memset: DLLs built without the C runtime link this file.
void zero(void* p, size_t size) { __stosb(static_cast<unsigned char*>(p), 0, size); }

// Reserved-but-uncommitted pages are inaccessible already, so protect_none
// may fail harmlessly on them; protect_rw commits such pages.
void protect_none(void* p, size_t size) {
  KeepLastError keep;
  DWORD old;
  VirtualProtect(p, size, PAGE_NOACCESS, &old);
}

void protect_rw(void* p, size_t size) {
  KeepLastError keep;
  DWORD old;
  if (!VirtualProtect(p, size, PAGE_READWRITE, &old)) {
    VirtualAlloc(p, size, MEM_COMMIT, PAGE_READWRITE);
  }
}

// Large pages on Windows need SeLockMemoryPrivilege and MEM_LARGE_PAGES at
// allocation time; there is no advisory equivalent.
void advise_huge(void*, size_t) {}

uint64_t now_ms() {
  static std::atomic<uint64_t> freq{0};
  uint64_t f = freq.load(std::memory_order_relaxed);
  if (f == 0) {
    LARGE_INTEGER li;
    QueryPerformanceFrequency(&li);
    f = uint64_t(li.QuadPart);
    freq.store(f, std::memory_order_relaxed);
  }
  LARGE_INTEGER now;
  QueryPerformanceCounter(&now);
  const uint64_t c = uint64_t(now.QuadPart);
  return c / f * 1000 + c % f * 1000 / f;
}

void yield() { SwitchToThread(); }

void sleep_ms(uint32_t ms) { Sleep(ms); }

// WaitOnAddress lives in kernelbase from Windows 8 on; resolve it at run time
// so the DLL still loads on older systems, and fall back to polling.
namespace {
using WaitOnAddressFn = BOOL(WINAPI*)(volatile VOID*, PVOID, SIZE_T, DWORD);
using WakeByAddressAllFn = VOID(WINAPI*)(PVOID);
WaitOnAddressFn g_wait_fn = nullptr;
WakeByAddressAllFn g_wake_fn = nullptr;
WakeByAddressAllFn g_wake_one_fn = nullptr;  // WakeByAddressSingle: same signature
using ShutdownInProgressFn = BOOLEAN(WINAPI*)();
ShutdownInProgressFn g_shutdown_fn = nullptr;  // ntdll's RtlDllShutdownInProgress
INIT_ONCE g_wait_once = INIT_ONCE_STATIC_INIT;

BOOL CALLBACK init_wait(PINIT_ONCE, PVOID, PVOID*) {
  if (HMODULE nt = GetModuleHandleW(L"ntdll.dll")) {
    __atomic_store_n(&g_shutdown_fn,
                     reinterpret_cast<ShutdownInProgressFn>(
                         reinterpret_cast<void*>(GetProcAddress(nt, "RtlDllShutdownInProgress"))),
                     __ATOMIC_RELEASE);
  }
  HMODULE m = GetModuleHandleW(L"kernelbase.dll");
  if (!m) m = GetModuleHandleW(L"api-ms-win-core-synch-l1-2-0.dll");
  if (m) {
    auto w = reinterpret_cast<WaitOnAddressFn>(
        reinterpret_cast<void*>(GetProcAddress(m, "WaitOnAddress")));
    auto k = reinterpret_cast<WakeByAddressAllFn>(
        reinterpret_cast<void*>(GetProcAddress(m, "WakeByAddressAll")));
    auto one = reinterpret_cast<WakeByAddressAllFn>(
        reinterpret_cast<void*>(GetProcAddress(m, "WakeByAddressSingle")));
    if (w && k && one) {
      // The wait function last: a lock waiter that sleeps finds the wakes.
      __atomic_store_n(&g_wake_fn, k, __ATOMIC_RELEASE);
      __atomic_store_n(&g_wake_one_fn, one, __ATOMIC_RELEASE);
      __atomic_store_n(&g_wait_fn, w, __ATOMIC_RELEASE);
    }
  }
  return TRUE;
}

void init_wait_once() {
  KeepLastError keep;
  InitOnceExecuteOnce(&g_wait_once, init_wait, nullptr, nullptr);
}
}  // namespace

void wait_on(const uint32_t* word, uint32_t expected, uint32_t timeout_ms) {
  init_wait_once();
  KeepLastError keep;
  if (g_wait_fn) {
    g_wait_fn(const_cast<uint32_t*>(word), &expected, sizeof expected, timeout_ms);
    return;
  }
  const uint64_t start = now_ms();
  while (__atomic_load_n(word, __ATOMIC_ACQUIRE) == expected) {
    if (now_ms() - start >= timeout_ms) return;
    Sleep(1);
  }
}

void wake(const uint32_t* word) {
  init_wait_once();
  if (g_wake_fn) g_wake_fn(const_cast<uint32_t*>(word));
}

// Only what init_wait resolved already: resolving takes the loader lock,
// which a thread in DllMain may hold while it waits for one of our locks.
// tls_heap_init (process start-up) resolves them.
void lock_wait(const uint32_t* word, uint32_t expected) {
  auto wait = __atomic_load_n(&g_wait_fn, __ATOMIC_ACQUIRE);
  KeepLastError keep;
  if (wait)
    wait(const_cast<uint32_t*>(word), &expected, sizeof expected, INFINITE);
  else
    SwitchToThread();
}

void lock_wake(const uint32_t* word) {
  // A waiter that slept saw the functions resolved, and so does this thread
  // (the unlock's exchange comes after the waiter's).
  auto wake = __atomic_load_n(&g_wake_one_fn, __ATOMIC_ACQUIRE);
  if (wake) {
    KeepLastError keep;
    wake(const_cast<uint32_t*>(word));
  }
}

// Resolved at start-up with the wait functions: resolving now could wait for
// the loader lock, which the exiting thread holds.
bool process_exiting() {
  auto in_progress = __atomic_load_n(&g_shutdown_fn, __ATOMIC_ACQUIRE);
  return in_progress && in_progress();
}

// FlushProcessWriteBuffers is the Windows barrier, but Wine 8 (where the
// Windows build is tested) stubs it; an untested barrier is none. Runs held
// back on Windows go when their thread next allocates, collects or exits.
bool process_barrier() { return false; }

namespace {
struct ThreadStart {
  void (*fn)(void*);
  void* arg;
};

DWORD WINAPI thread_trampoline(LPVOID raw) {
  ThreadStart start = *static_cast<ThreadStart*>(raw);
  HeapFree(GetProcessHeap(), 0, raw);
  start.fn(start.arg);
  return 0;
}
}  // namespace

// The start block comes from the process heap (kernel32), never from the CRT.
bool start_thread(void (*fn)(void*), void* arg) {
  KeepLastError keep;
  auto* start = static_cast<ThreadStart*>(HeapAlloc(GetProcessHeap(), 0, sizeof(ThreadStart)));
  if (!start) return false;
  *start = {fn, arg};
  HANDLE h = CreateThread(nullptr, 64 * 1024, thread_trampoline, start,
                          STACK_SIZE_PARAM_IS_A_RESERVATION, nullptr);
  if (!h) {
    HeapFree(GetProcessHeap(), 0, start);
    return false;
  }
  SetThreadPriority(h, THREAD_PRIORITY_BELOW_NORMAL);
  CloseHandle(h);
  return true;
}

// Values are copied into a static arena (the C runtime's environment copy may
// not exist yet, and getenv could allocate). A name read again with the same
// value returns the same pointer, so repeated reads don't use up the arena.
namespace {
constexpr size_t kEnvArenaSize = 8192;
char g_env_arena[kEnvArenaSize];
size_t g_env_used = 0;
SRWLOCK g_env_lock = SRWLOCK_INIT;

// Kept out of GCC's loop-idiom pass, which would turn them into imports of
// the C runtime's strlen: this file imports kernel32 only.
#define GRANULE_NO_LIBC_IDIOMS \
  __attribute__((noinline, optimize("no-tree-loop-distribute-patterns")))

GRANULE_NO_LIBC_IDIOMS size_t str_len(const char* s) {
  size_t n = 0;
  while (s[n]) ++n;
  return n;
}

GRANULE_NO_LIBC_IDIOMS bool str_eq(const char* a, const char* b) {
  while (*a && *a == *b) ++a, ++b;
  return *a == *b;
}
GRANULE_NO_LIBC_IDIOMS void copy_bytes(char* to, const char* from, size_t n) {
  for (size_t i = 0; i < n; ++i) to[i] = from[i];
}
}  // namespace

// The process environment block exists before any code of ours runs.
bool environment_ready() { return true; }

const char* getenv_raw(const char* name) {
  KeepLastError keep;
  char value[1024];
  SetLastError(ERROR_SUCCESS);
  DWORD n = GetEnvironmentVariableA(name, value, sizeof value);
  if (n == 0 && GetLastError() == ERROR_ENVVAR_NOT_FOUND) return nullptr;
  if (n >= sizeof value) return nullptr;  // longer than any option value
  value[n] = '\0';
  const char* result = nullptr;
  AcquireSRWLockExclusive(&g_env_lock);
  // Arena entries: name '\0' value '\0'.
  for (size_t at = 0; at < g_env_used && !result;) {
    const char* entry_name = g_env_arena + at;
    const char* entry_value = entry_name + str_len(entry_name) + 1;
    if (str_eq(entry_name, name) && str_eq(entry_value, value)) result = entry_value;
    at = size_t(entry_value - g_env_arena) + str_len(entry_value) + 1;
  }
  const size_t name_len = str_len(name);
  if (!result && g_env_used + name_len + n + 2 <= kEnvArenaSize) {
    char* out = g_env_arena + g_env_used;
    copy_bytes(out, name, name_len + 1);
    copy_bytes(out + name_len + 1, value, n + 1);
    result = out + name_len + 1;
    g_env_used += name_len + n + 2;
  }
  ReleaseSRWLockExclusive(&g_env_lock);
  return result;
}

namespace {
HANDLE g_kept_stderr = nullptr;  // keep_stderr's duplicate, once made
}  // namespace

// A duplicate of the standard error handle survives the program closing its
// own (CloseHandle / _close(2)), so statistics at exit still get out.
void keep_stderr() {
  KeepLastError keep;
  HANDLE h = GetStdHandle(STD_ERROR_HANDLE);
  if (h == nullptr || h == INVALID_HANDLE_VALUE || g_kept_stderr) return;
  HANDLE dup = nullptr;
  if (DuplicateHandle(GetCurrentProcess(), h, GetCurrentProcess(), &dup, 0, FALSE,
                      DUPLICATE_SAME_ACCESS))
    g_kept_stderr = dup;
}

void write_stderr(const char* s, size_t n) {
  KeepLastError keep;
  HANDLE h = g_kept_stderr ? g_kept_stderr : GetStdHandle(STD_ERROR_HANDLE);
  if (h == nullptr || h == INVALID_HANDLE_VALUE) return;
  while (n > 0) {
    DWORD chunk = n > 0x10000000 ? 0x10000000 : DWORD(n);
    DWORD written = 0;
    if (!WriteFile(h, s, chunk, &written, nullptr) || written == 0) break;
    s += written;
    n -= written;
  }
}

// No advapi32/bcrypt import for a seed: mix the cycle counter, the
// performance counter, ids and an address (ASLR), through splitmix64.
uint64_t random_seed() {
  LARGE_INTEGER qpc;
  QueryPerformanceCounter(&qpc);
  uint64_t x = __builtin_ia32_rdtsc() ^ uint64_t(qpc.QuadPart) << 17 ^
               uint64_t(GetCurrentProcessId()) << 32 ^ uint64_t(GetCurrentThreadId()) ^
               uintptr_t(&qpc);
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  x ^= x >> 31;
  return x | 1;
}

uint32_t process_id() { return uint32_t(GetCurrentProcessId()); }

// Thread exit through fiber-local storage: its callback runs when a thread
// that set a non-null value exits (and in DLL-free programs too, unlike
// DLL_THREAD_DETACH).
namespace {
DWORD g_fls_index = FLS_OUT_OF_INDEXES;
}  // namespace

void thread_exit_register(void (*fn)(void*)) {
  KeepLastError keep;
  if (g_fls_index == FLS_OUT_OF_INDEXES)
    g_fls_index = FlsAlloc(reinterpret_cast<PFLS_CALLBACK_FUNCTION>(fn));  // x64: one ABI
}

void thread_exit_arm(void* value) {
  if (g_fls_index == FLS_OUT_OF_INDEXES) return;
  KeepLastError keep;
  FlsSetValue(g_fls_index, value);
}

// No fork on Windows.
void atfork_register(void (*)(), void (*)(), void (*)()) {}

// ---- Thread-local heap pointer (tls_windows.h) ----
unsigned long g_tls_heap_index = kTlsNoIndex;

bool tls_heap_init() {
  if (g_tls_heap_index != kTlsNoIndex) return true;
  init_wait_once();  // here, before any lock of ours can be contended (lock_wait)
  KeepLastError keep;
  static SRWLOCK lock = SRWLOCK_INIT;
  AcquireSRWLockExclusive(&lock);
  if (g_tls_heap_index == kTlsNoIndex) {
    DWORD index = TlsAlloc();
    if (index != TLS_OUT_OF_INDEXES) __atomic_store_n(&g_tls_heap_index, index, __ATOMIC_RELEASE);
  }
  ReleaseSRWLockExclusive(&lock);
  return g_tls_heap_index != kTlsNoIndex;
}

void tls_set_heap_slow(void* heap) {
  if (g_tls_heap_index == kTlsNoIndex) return;
  KeepLastError keep;
  TlsSetValue(g_tls_heap_index, heap);
}

}  // namespace granule::os
