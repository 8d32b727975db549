// The OS layer: the only code in Granule that talks to the operating system.
// One implementation per platform (os_linux.cpp, os_windows.cpp) is chosen at
// build time; everything above this header is platform-free.
#pragma once

#include <cstddef>
#include <cstdint>

namespace granule::os {

struct Info {
  size_t page_size;    // commit granularity
  size_t granularity;  // reservation granularity (64 KiB on Windows)
};

// Page size and allocation granularity, read from the OS once.
const Info& info();

// Reserve address space aligned to `alignment` (a power of two, a multiple
// of the granularity). Pages must be committed before use (on Linux commit is
// only bookkeeping: reserved memory is already readable and writable).
// Returns nullptr when the OS refuses.
void* reserve(size_t size, size_t alignment);
void release(void* p, size_t size);
// Make [p, p+size) usable. Page-aligned. False when the OS refuses.
bool commit(void* p, size_t size);
// Give the pages back: contents are lost, resident memory drops at once.
void decommit(void* p, size_t size);
// Make [p, p+size) read as zero. A big range (a calloc that reuses memory)
// is looked at a stretch at a time: where most pages are not resident, the
// stretch's pages are dropped rather than written, so zeroing faults in
// nothing the program hasn't touched yet and costs no more than a fresh
// mapping would.
void zero(void* p, size_t size);
// Guard pages for the hardened build: no access / read-write again.
void protect_none(void* p, size_t size);
void protect_rw(void* p, size_t size);
// Whether parts of a reservation can be released on their own and a
// reservation moved (Linux: munmap of any range, mremap). Windows releases
// whole reservations only.
bool can_split();
// Move the pages of [from, from+size) with their contents into [to, to+size),
// inside a reservation of ours; the old range is gone afterwards. False (and
// nothing changed) when the OS refuses or can't move pages.
bool move_pages(void* from, void* to, size_t size);
// Advise the OS that [p, p+size) may use transparent huge pages.
void advise_huge(void* p, size_t size);

// Test-only fault hook: the n-th reserve or commit from now fails (n >= 1);
// 0 turns the hook off. Costs one relaxed load on the slow OS path only.
void fail_after(long n);

uint64_t now_ms();  // monotonic clock
void yield();
void sleep_ms(uint32_t ms);  // may end early on a signal
// Block while *word == expected, at most timeout_ms; wake() wakes all waiters.
void wait_on(const uint32_t* word, uint32_t expected, uint32_t timeout_ms);
void wake(const uint32_t* word);
// For locks: block while *word == expected (it may return early), and wake
// one such waiter. Takes no lock of the OS's (Windows: until process start-up
// resolved WaitOnAddress, lock_wait yields instead), so a lock's waiter
// never waits for the loader.
void lock_wait(const uint32_t* word, uint32_t expected);
void lock_wake(const uint32_t* word);
// Every thread of the process passes a full memory barrier before this
// returns, so a thread that only orders its own stores and loads with a
// compiler barrier is ordered against the caller (the heavy half of an
// asymmetric fence). False where the system offers none; then nothing
// may rely on it.
bool process_barrier();
// Start a detached helper thread that blocks every signal; false on failure.
bool start_thread(void (*fn)(void*), void* arg);
// Whether helper threads may start before process start-up ran (Windows:
// CreateThread needs nothing from the C runtime, and a program linked with
// the static library has no start-up hook; Linux: not before libc is ready).
bool threads_before_start();

// Read an environment variable without libc's getenv (safe before libc is
// initialised). Returns a pointer to the value or nullptr.
const char* getenv_raw(const char* name);
// False while the C library has not set up the environment yet (malloc can
// run that early: from an executable's .preinit_array, before libc's init).
bool environment_ready();
void write_stderr(const char* s, size_t n);
// Keep a private copy of stderr, so reports at exit still reach it when the
// program closed its own (coreutils do).
void keep_stderr();
uint64_t random_seed();
uint32_t process_id();

// Thread exit: `fn(value)` runs when a thread that called thread_exit_arm
// exits. register once at start-up.
void thread_exit_register(void (*fn)(void* value));
void thread_exit_arm(void* value);
// True once the process is ending with its other threads already killed
// wherever they stood, perhaps holding one of our locks (Windows: ExitProcess
// terminates them before the exiting thread's FLS callbacks and DLL detach).
// Linux exit() leaves them running, so never there.
#if defined(_WIN32)
bool process_exiting();
#else
inline bool process_exiting() { return false; }
#endif

// Called around fork() (where fork exists) so locks are consistent.
void atfork_register(void (*prepare)(), void (*parent)(), void (*child)());

}  // namespace granule::os
