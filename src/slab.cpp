#include "slab.h"

#include "secure.h"
#include "size_classes.h"

namespace granule {
namespace {

void init_common(Slab* s, Heap* h, uint32_t block_size, uintptr_t key) {
  Segment* seg = segment_of(s);
  unsigned first = slice_index(s);
  s->start = slice_start(seg, first);
  size_t bytes = slices_bytes(first, s->slice_count);
  slab_set_block_size(s, block_size);
  s->reserved = uint32_t(bytes / block_size);
  s->capacity = 0;
  s->limit = 0;
  s->used = 0;
  s->free = nullptr;
  s->key = key;
  s->heap = h;
  s->flags = 0;
  s->free_since = 0;
  s->next = s->prev = nullptr;
  s->list = SlabList::kNone;
  s->remote.store(kAttached, std::memory_order_relaxed);
  if constexpr (kSecure) secure::slab_init(s);
}

}  // namespace

void slab_init(Slab* s, Heap* h, unsigned c, uintptr_t key) {
  init_common(s, h, uint32_t(class_block_size(c)), key);
  s->size_class = uint8_t(c);
  s->kind = SliceKind::kSlab;
}

void slab_init_large(Slab* s, Heap* h, uintptr_t key) {
  size_t bytes = slices_bytes(slice_index(s), s->slice_count);
  init_common(s, h, uint32_t(bytes), key);
  s->size_class = uint8_t(kClassCount);
  s->kind = SliceKind::kLarge;
  s->capacity = 1;
  s->limit = slab_step(s);
}

void slab_span_resized(Slab* s) {
  auto bytes = uint32_t(slices_bytes(slice_index(s), s->slice_count));
  slab_set_block_size(s, bytes);
  __atomic_store_n(&s->limit, slab_step(s), __ATOMIC_RELAXED);
}

bool slab_extend(Slab* s) {
  if (s->capacity >= s->reserved) return false;
  // Carve about a page at a time: a fresh slab touches only what it uses.
  uint32_t bs = s->block_size;
  uint32_t n = bs >= 4096 ? 1 : 4096 / bs;
  if (n > s->reserved - s->capacity) n = s->reserved - s->capacity;
  char* first = s->start + size_t(s->capacity) * bs;
  if constexpr (kSecure) {
    secure::carve(s, first, n);
  } else {
    // In address order, as the hardware prefetcher follows best: the
    // stores reach lines no one has touched since the pages were faulted
    // in (or reused). One 16-byte store per block writes its link and its
    // tag, which both grow by bs from one block to the next.
    using Pair = uint64_t __attribute__((vector_size(16)));
    Pair words = {uint64_t(uintptr_t(first) + bs), uint64_t(block_tag(s, first))};
    const Pair step = {bs, bs};
    char* end = first + size_t(n) * bs;
    for (char* p = first; p != end; p += bs) {
      __builtin_memcpy(p, &words, sizeof words);
      words += step;
    }
    reinterpret_cast<Block*>(end - bs)->next = s->free;  // the last one links to what was there
    s->free = reinterpret_cast<Block*>(first);
  }
  s->capacity += n;
  __atomic_store_n(&s->limit, s->capacity * slab_step(s), __ATOMIC_RELAXED);
  return true;
}

bool slab_collect(Slab* s) {
  uint64_t w = s->remote.load(std::memory_order_relaxed);
  if (!remote_ptr(w)) return false;
  // Only the owner moves an attached slab out of kAttached, so the state
  // bits stay; acquire pairs with the freers' release.
  w = s->remote.exchange(kAttached, std::memory_order_acquire);
  Block* list = remote_ptr(w);
  uint32_t n = remote_count(w);
  if constexpr (kSecure) {
    // Every block must be marked and live; the walk finds the tail too.
    Block* tail = secure::collect(s, list, true);
    block_set_next(s, tail, s->free);
    s->free = list;
    s->used -= n;
    return true;
  }
  if (s->free) {
    Block* tail = list;
    while (Block* next = block_next(s, tail)) tail = next;
    block_set_next(s, tail, s->free);
  }
  s->free = list;
  s->used -= n;
  return true;
}

namespace {
// The owner's count, read without its cooperation: it writes `used` without
// atomics, so this is only a hint (a benign race, kept from ThreadSanitizer:
// the collector checks again with the owner held off).
__attribute__((no_sanitize("thread"))) uint32_t used_hint(const Slab* s) {
  return *static_cast<const volatile uint32_t*>(&s->used);
}
}  // namespace

RemoteFree slab_push_remote(Slab* s, Block* head, Block* tail, uint32_t count) {
  // Acquire: having seen kDetached we read `capacity`, last written by the
  // owner before its detaching compare-and-swap.
  uint64_t w = s->remote.load(std::memory_order_acquire);
  uint64_t next;
  uint32_t n, mark;
  do {
    n = remote_count(w) + count;
    block_set_next(s, tail, remote_ptr(w));
    // Read before the push: after it, other frees and a collector may
    // retire the slab, and its segment may go back to the system.
    // Detached: its capacity; attached: the owner's count, a hint.
    mark = remote_detached(w) ? s->capacity : kSecure ? 0 : used_hint(s);
    if (remote_detached(w) && n == mark)
      next = kRetiring;
    else
      next = remote_pack(head, n, remote_state(w));
  } while (!s->remote.compare_exchange_weak(w, next, std::memory_order_acq_rel,
                                            std::memory_order_acquire));
  if (next == kRetiring) return RemoteFree::kNowEmpty;
  if (remote_state(w) == kAttached)
    return !kSecure && n == mark ? RemoteFree::kAllBack : RemoteFree::kPushed;
  if (remote_state(w) != kDetached) return RemoteFree::kPushed;
  uint32_t ready = ready_threshold(mark);
  return n >= ready && n - count < ready ? RemoteFree::kNowReady : RemoteFree::kPushed;
}

}  // namespace granule
