// Slabs: a run of slices serving one size class. The owner allocates and
// frees through `free` with no atomics; other threads push onto `remote`.
#pragma once

#include "segment.h"
#include "types.h"

namespace granule {

// Set up a fresh slab of class c (small/medium) in the slices at head.
void slab_init(Slab* s, Heap* h, unsigned c, uintptr_t key);
// Set up a one-block large span of `bytes` usable bytes.
void slab_init_large(Slab* s, Heap* h, uintptr_t key);

// Carve more never-used blocks into `free`; false when the slab is all carved.
bool slab_extend(Slab* s);
// Owner: move blocks freed by other threads onto `free`; false if none.
bool slab_collect(Slab* s);

// The outcome of a free that went through `remote`.
enum class RemoteFree { kPushed, kNowReady, kNowEmpty };
RemoteFree slab_free_remote(Slab* s, Block* b);

// Head descriptor of the slab containing slice descriptor s (kTail → head).
inline Slab* slab_head(Slab* s) { return s->kind == SliceKind::kTail ? s - s->head_offset : s; }

// Offset of p in the carved part of s, when p starts a block; else -1.
inline int64_t slab_block_offset(const Slab* s, uintptr_t p) {
  uint64_t off = p - uintptr_t(s->start);
  if (off >= s->carved) return -1;
  // Lemire's test: off is a multiple of block_size iff off * ceil(2^64/b) < that constant.
  if (off * s->div_magic >= s->div_magic) return -1;
  return int64_t(off);
}
// Index of the block containing offset off.
inline uint32_t slab_block_index(const Slab* s, uint64_t off) {
  return uint32_t((static_cast<unsigned __int128>(off) * s->div_magic) >> 64);
}
inline uintptr_t block_tag(const Slab* s, const void* b) { return s->key ^ uintptr_t(b); }
// Detached slabs go back to the owner once this many blocks came back.
inline uint32_t slab_ready_threshold(const Slab* s) { return (s->capacity + 7) / 8; }

}  // namespace granule
