// Heaps: one per thread (found through thread-local storage), plus
// first-class heaps a program creates and destroys whole. Thread heaps take
// slices from segments they share (g_thread_segments), a first-class heap
// from its own; an owner allocates from the heads of its class queues.
#pragma once

#include <cstddef>

#include "slab.h"
#include "types.h"

namespace granule {

extern constinit Slab g_empty_slab;
extern constinit Heap g_empty_heap;
// What a thread's heap is after its heap was given up at thread exit: empty
// as g_empty_heap, but a free there does not set up a heap the exit hook
// would never see.
extern constinit Heap g_exited_heap;
// A thread with no heap of its own (never had one, or has left).
inline bool heap_is_placeholder(const Heap* h) { return h == &g_empty_heap || h == &g_exited_heap; }

// Thread heaps take their slices from segments they all share: the slices a
// heap gives back serve the next heap that needs some, so a program whose
// live blocks move from thread to thread (short-lived threads, frees on
// another thread) keeps one peak resident, not one per heap. A first-class
// heap keeps its own segments: it is limited, reset and destroyed whole.
// The shared segments' lock comes after any heap's lock.
extern constinit Heap g_thread_segments;
// Relaxed: a heap's kind changes only while it is destroyed, before it reads
// as live again.
inline bool heap_is_thread(const Heap* h) {
  return h->kind.load(std::memory_order_relaxed) == HeapKind::kThread;
}
inline Heap* slice_home(Heap* h) { return heap_is_thread(h) ? &g_thread_segments : h; }

#if defined(_WIN32)
}  // namespace granule
#include "os/tls_windows.h"
namespace granule {
inline Heap* heap_current() {
  void* h = os::tls_get_heap();
  return h ? static_cast<Heap*>(h) : &g_empty_heap;
}
inline void heap_set_current(Heap* h) { os::tls_set_heap(h); }
#else
// One initial-exec TLS word: cheap to read, and small enough that dlopen of
// libgranule.so never runs out of static TLS.
extern constinit thread_local Heap* tl_heap __attribute__((tls_model("initial-exec")));
inline Heap* heap_current() { return tl_heap; }
inline void heap_set_current(Heap* h) { tl_heap = h; }
#endif

// --- allocation, by the owner of h (a thread heap's thread, or the holder
// of a first-class heap's owner_lock) ---
void* heap_alloc(Heap* h, size_t size);
void* heap_alloc_aligned(Heap* h, size_t alignment, size_t size);
// A huge block (over kLargeMax) for h; zero: it must read as zeros.
void* heap_alloc_huge(Heap* h, size_t size, size_t alignment, bool zero);
// h's resident set grew by `bytes` outside its segments: its idle free
// slices go back as much now instead of after their purge delay.
void heap_offset_growth(Heap* h, size_t bytes);
// The malloc fast path missed: initialise the thread heap if needed, then
// allocate. nullptr when memory is exhausted (errno is left to the caller).
void* heap_malloc_slow(size_t size);

// Grow the live span at p in place to hold `size` bytes (at most
// kLargeMax), taking the free slices right after it. False: p is no such
// span, or they are not free; nothing changed.
bool heap_grow_span(void* p, size_t size);

// --- free of anything the fast path did not take ---
void heap_free_slow(void* p);
// A valid block of a slab another heap owns (checked by the caller), and
// its block_tag; h is the calling thread's heap.
void heap_free_remote(Heap* h, Slab* s, Block* b, uintptr_t tag);
// Owner's local free made the slab empty.
void heap_slab_empty(Heap* h, Slab* s);

// Usable bytes at p, 0 if p is not a live block we can vouch for.
size_t heap_usable_size(const void* p);
// The heap that owns block p (nullptr for huge blocks of thread heaps / foreign).
Heap* heap_of_block(const void* p);

// --- process and thread life ---
Heap* heap_thread_init();
void heap_process_init();

// --- first-class heaps ---
Heap* heap_create(size_t initial_reserve, size_t max_bytes);
void heap_destroy(Heap* h);
void heap_reset(Heap* h);

// --- memory return ---
// Purge what is due in every heap (force: everything free now), and push the
// runs of threads that stopped freeing (force: of every thread). Returns true
// when something is still waiting for its delay, or runs for their thread.
bool heap_purge_all(bool force);
// The calling thread hands back everything it can now.
void heap_collect_current();

// fork(): take every heap lock before, release after (reset in the child).
void heap_lock_all();
void heap_unlock_all(bool in_child);
// In a fork() child, after heap_unlock_all(true): abandon the thread heaps of
// the threads that did not survive the fork.
void heap_abandon_others_in_child();

// Visit every heap ever created (including pooled ones).
template <class Fn>
void heap_for_each(Fn fn);
Heap* heap_registry_head();

template <class Fn>
void heap_for_each(Fn fn) {
  for (Heap* h = heap_registry_head(); h; h = h->registry_next.load(std::memory_order_acquire))
    fn(h);
}

}  // namespace granule
