// The malloc and free fast paths. Hot: keep them short, no atomics, no
// locks, no calls; anything unusual goes to the slow paths in heap.cpp.
#include <cerrno>

#include "granule.h"
#include "heap.h"
#include "secure.h"
#include "segment.h"

using namespace granule;

namespace {
__attribute__((noinline)) void* malloc_slow(size_t size) {
  void* p = heap_malloc_slow(size);
  if (!p) errno = ENOMEM;
  return p;
}
// A live block of a slab this thread's fast path doesn't own: another
// thread's slab takes it on its remote list; the rest is the slow path's.
// Out of line so gr_free compares the owner with the thread's heap without
// keeping the heap in a register.
__attribute__((noinline)) void free_not_owner(Slab* s, Block* b, uintptr_t tag) {
  Heap* h = heap_current();
  if (s->kind == SliceKind::kSlab && s->heap != h) return heap_free_remote(h, s, b, tag);
  heap_free_slow(b);
}
}  // namespace

extern "C" void* gr_malloc(size_t size) {
  if constexpr (kSecure) {
    // The owner pops with every check inline (secure::pop); the rest, and
    // anything unusual, takes the slow path.
    Heap* h = heap_current();
    if (__builtin_expect(size <= kDirectMax - kCanarySize, 1)) {
      Slab* s = h->direct[(size + kCanarySize + 15) >> 4];
      if (__builtin_expect(s->free != nullptr, 1)) return secure::pop(h, s);
    }
    return malloc_slow(size);
  }
  // Fast path: one TLS load, one table lookup, pop the slab's free list.
  Heap* h = heap_current();
  if (__builtin_expect(size <= kDirectMax, 1)) {
    Slab* s = h->direct[(size + 15) >> 4];
    Block* b = s->free;
    if (__builtin_expect(b != nullptr, 1)) {
      s->free = b->next;
      // The next block this slab hands out: when other threads freed it, it
      // is cold here, and fetching it now hides the miss of the next malloc.
      __builtin_prefetch(b->next, 1);
      s->used++;
      b->tag = 0;  // a live block must not look free
      return b;
    }
  }
  return malloc_slow(size);
}

extern "C" void gr_free(void* p) {
  // Fast path: our segment, a slab's block start that is not already free.
  // The owning thread pushes it on the slab's list; another thread pushes it
  // on the slab's remote list (one compare-and-swap). NULL, huge, large,
  // foreign and invalid frees fail one of these tests and take the slow path.
  if constexpr (kSecure) {
    // The owner frees a block start of its attached slab with every check
    // inline (secure::on_free); other threads, double and invalid frees go
    // to the slow path, which checks them.
    uintptr_t u = uintptr_t(p);
    if (__builtin_expect(map_kind(u) == kMapSegment, 1)) {
      Slab* s = slab_at(segment_of(u), u);
      Heap* h = heap_current();
      uint64_t off = u - uintptr_t(s->start);
      // Blocks filled inline only (bigger ones are filled by a memset call).
      if (__builtin_expect(slab_block_start(s, off) && s->block_size <= secure::kFillInline, 1)) {
        auto* b = static_cast<Block*>(p);
        if (__builtin_expect(slab_fast_owner(s) == h, 1)) {
          secure::on_free(s, b, true);
          block_set_next(s, b, s->free);
          s->free = b;
          if (__builtin_expect(--s->used != 0, 1)) return;
          return heap_slab_empty(h, s);
        }
        // Another thread's live slab (only a live slab's head descriptor
        // says kSlab): checked and marked, then pushed on its remote list.
        if (s->kind == SliceKind::kSlab && s->heap != h) {
          secure::on_free(s, b, false);
          return heap_free_remote(h, s, b, block_tag(s, b));
        }
      }
    }
    return heap_free_slow(p);
  }
  if (Slab* s = live_block_slice(p)) {
    auto* b = static_cast<Block*>(p);
    uintptr_t tag = block_tag(s, b);  // before the stores: they could alias s->key
    Heap* owner = slab_fast_owner(s);
    if (__builtin_expect(owner == heap_current(), 1)) {
      b->next = s->free;
      b->tag = tag;
      s->free = b;
      if (__builtin_expect(!slab_owner_put_back(s), 1)) return;
      return heap_slab_empty(owner, s);
    }
    return free_not_owner(s, b, tag);
  }
  heap_free_slow(p);
}
