// Slabs: a run of slices serving one size class. The owner allocates and
// frees through `free` with no atomics; other threads push onto `remote`.
#pragma once

#include "report.h"
#include "segment.h"
#include "types.h"

namespace granule {

// Set up a fresh slab of class c (small/medium) in the slices at head.
void slab_init(Slab* s, Heap* h, unsigned c, uintptr_t key);
// Set up a one-block large span of `bytes` usable bytes.
void slab_init_large(Slab* s, Heap* h, uintptr_t key);
// A span's slice count changed: its one block spans all of them.
void slab_span_resized(Slab* s);

// Carve more never-used blocks into `free`; false when the slab is all carved.
bool slab_extend(Slab* s);
// Owner: move blocks freed by other threads onto `free`; false if none.
bool slab_collect(Slab* s);

// Push the blocks head..tail (linked, tagged free), count of them, onto
// `remote` at once, and say what that set off (kAllBack: every block of an
// attached slab seems free now, a hint for the collector of idle owners).
enum class RemoteFree { kPushed, kNowReady, kNowEmpty, kAllBack };
RemoteFree slab_push_remote(Slab* s, Block* head, Block* tail, uint32_t count);

// Head descriptor of the slab containing slice descriptor s (kTail → head).
inline Slab* slab_head(Slab* s) { return s->kind == SliceKind::kTail ? s - s->head_offset : s; }

// The block-start test in one multiply and one compare. With d =
// ceil(2^64/b) + 1, off * d (mod 2^64) is k * step for off = k * b, where
// step = b * d (mod 2^64) is below 2b; for any other offset within a few
// MiB either side of the start it is at least 2^64/b (Lemire's divisibility
// bound), far above any limit. So off * d < capacity * step holds exactly
// for the starts of the carved blocks.
inline uint32_t slab_step(const Slab* s) { return uint32_t(s->div_magic * s->block_size); }
inline void slab_set_block_size(Slab* s, uint32_t block_size) {
  s->block_size = block_size;
  s->div_magic = ~uint64_t{0} / block_size + 2;  // ceil(2^64/b) + 1, b >= 2
}
// Read by threads that may not be the owner (relaxed: a block they free was
// carved before they got it).
inline uint32_t slab_limit(const Slab* s) { return __atomic_load_n(&s->limit, __ATOMIC_RELAXED); }
inline bool slab_block_start(const Slab* s, uint64_t off) {
  return off * s->div_magic < slab_limit(s);
}
// Bytes carved so far (any thread).
inline uint32_t slab_carved(const Slab* s) { return slab_limit(s) / slab_step(s) * s->block_size; }

// Offset of p in the carved part of s, when p starts a block; else -1.
inline int64_t slab_block_offset(const Slab* s, uintptr_t p) {
  uint64_t off = p - uintptr_t(s->start);
  return slab_block_start(s, off) ? int64_t(off) : -1;
}
// Index of the block containing offset off.
inline uint32_t slab_block_index(const Slab* s, uint64_t off) {
  return uint32_t((static_cast<unsigned __int128>(off) * s->div_magic) >> 64);
}
// Free blocks carry a tag: key + address in the default build (a sum, not
// a xor, so that the tags of a slab's blocks step by the block size like
// their links, and slab_extend writes both in one store); the hardened
// build fills free blocks whole (the tag is part of the fill, so reading a
// free block tells nothing about the key).
inline constexpr uint64_t kFreeFill = 0xdfdfdfdfdfdfdfdfull;
inline uintptr_t block_tag(const Slab* s, const void* b) {
  if constexpr (kSecure) return uintptr_t(kFreeFill);
  return s->key + uintptr_t(b);
}

// Hot (free and realloc fast paths, default build): the slice descriptor of
// p when p is a live block start in a segment: carved, on a block boundary,
// not tagged free. Only a head descriptor whose fast owner or kind says so
// is a live slab (tail and free slices keep stale fields). nullptr otherwise:
// NULL, huge, foreign, interior and already-free pointers take a slow path.
inline Slab* live_block_slice(void* p) {
  uintptr_t u = uintptr_t(p);
  if (__builtin_expect(map_kind(u) != kMapSegment, 0)) return nullptr;
  Slab* s = slab_at(segment_of(u), u);
  uint64_t off = u - uintptr_t(s->start);
  auto* b = static_cast<Block*>(p);
  if (__builtin_expect(slab_block_start(s, off) && b->tag != block_tag(s, b), 1)) return s;
  return nullptr;
}

// Hardened build: a block freed by another thread carries this mark in its
// tag word until the owner collects it (a second free sees it). A live block
// holds it by chance with odds 2^-64. It has its own secret: a program that
// reads it after free learns neither the link nor the canary key, at most
// how to make a free of its own abort.
inline uint64_t secure_remote_tag(const Slab* s, const void* b) {
  return s->secure_tag_key ^ uintptr_t(b);
}

// Free-list links. The hardened build stores them encoded with the slab's
// secret key, so a program that overwrites a free block can't steer the
// next allocation; a link that decodes outside the slab is reported.
inline uintptr_t link_mask(const Slab* s, const Block* b) {
  return s->key ^ ((uintptr_t(b) >> 4) * 0x9e3779b97f4a7c15ull);
}
inline Block* block_next(const Slab* s, const Block* b) {
  if constexpr (kSecure) {
    auto* next = reinterpret_cast<Block*>(uintptr_t(b->next) ^ link_mask(s, b));
    if (next && slab_block_offset(s, uintptr_t(next)) < 0) {
      report_error(ErrorKind::kCorrupt, b, s->block_size);
      __builtin_unreachable();  // the hardened report_error aborts
    }
    return next;
  }
  return b->next;
}
inline void block_set_next(const Slab* s, Block* b, Block* next) {
  if constexpr (kSecure) {
    b->next = reinterpret_cast<Block*>(uintptr_t(next) ^ link_mask(s, b));
  } else {
    b->next = next;
  }
}
// Owner, hot (a local free): one block fewer out; true when none is left.
// The count is stored last, with release (heap.cpp, OwnerSection). On
// x86-64 one read-modify-write instruction does it, as x86 keeps stores in
// order; an atomic store costs a load, a subtract and a store. A
// ThreadSanitizer build takes the atomic store, which it can see.
inline bool slab_owner_put_back(Slab* s) {
#if defined(__x86_64__) && !defined(GRANULE_TSAN)
  bool none_left;
  asm volatile("subl $1, %0" : "+m"(s->used), "=@ccz"(none_left) : : "memory");
  return none_left;
#else
  uint32_t used = s->used - 1;
  __atomic_store_n(&s->used, used, __ATOMIC_RELEASE);
  return used == 0;
#endif
}

// Detached slabs go back to the owner once this many blocks came back.
inline uint32_t ready_threshold(uint32_t capacity) { return (capacity + 7) / 8; }

}  // namespace granule
