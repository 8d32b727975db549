// The hardened build's checks (GRANULE_SECURE). Everything here is called
// only under `if constexpr (kSecure)`, so the default build's paths don't
// change. Per slab: an allocation bitmap in the segment header (exact
// double- and invalid-free detection), blocks carved in a shuffled order and
// popped from one of the first two places, a canary in each block's last
// bytes, and free blocks filled whole (checked when handed out again).
#pragma once

#include <cstring>

#include "os/os.h"
#include "report.h"
#include "slab.h"

namespace granule::secure {

// One bit per 16 bytes of slice: enough for any class slab.
inline constexpr size_t kBitmapOffset = (sizeof(Segment) + 63) & ~size_t{63};
inline constexpr size_t kBitmapWordsPerSlice = kSliceSize / kMinAlign / 64;
static_assert(!kSecure ||
                  kBitmapOffset + kSlicesPerSegment * kBitmapWordsPerSlice * 8 + kGuardSize <=
                      kSegmentHeaderSize,
              "the bitmap and the header guard page must fit in the header");

inline uint64_t* bitmap_of(const Slab* s) {
  auto* base = reinterpret_cast<char*>(segment_of(s)) + kBitmapOffset;
  return reinterpret_cast<uint64_t*>(base) + size_t(slice_index(s)) * kBitmapWordsPerSlice;
}

// A new slab: no block of it is live (a heap reset may have left bits set).
inline void slab_init(Slab* s) {
  s->secure_bits = bitmap_of(s);
  std::memset(s->secure_bits, 0, size_t(s->slice_count) * kBitmapWordsPerSlice * 8);
}

// Atomic: the owner allocates while other threads free into the same words.
inline bool bit_set(const Slab* s, uint32_t i) {
  uint64_t m = uint64_t{1} << (i & 63);
  return __atomic_fetch_or(&s->secure_bits[i >> 6], m, __ATOMIC_RELAXED) & m;
}
inline bool bit_clear(const Slab* s, uint32_t i) {
  uint64_t m = uint64_t{1} << (i & 63);
  return __atomic_fetch_and(&s->secure_bits[i >> 6], ~m, __ATOMIC_RELAXED) & m;
}
inline bool bit_test(const Slab* s, uint32_t i) {
  return __atomic_load_n(&s->secure_bits[i >> 6], __ATOMIC_RELAXED) & (uint64_t{1} << (i & 63));
}
inline uint32_t index_of(const Slab* s, const void* b) {
  return slab_block_index(s, uintptr_t(b) - uintptr_t(s->start));
}

// The owner's random stream (only the owner carves and pops).
inline uintptr_t next_random(Slab* s) {
  uintptr_t x = s->heap->key_state;
  x ^= x << 13, x ^= x >> 7, x ^= x << 17;
  s->heap->key_state = x;
  return x;
}

inline uint64_t canary(const Slab* s, const void* b) {
  uint64_t x = s->key ^ (uintptr_t(b) * 0xff51afd7ed558ccdull);
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  return x ^ (x >> 29);
}
inline uint64_t* canary_slot(const Slab* s, void* b) {
  return reinterpret_cast<uint64_t*>(static_cast<char*>(b) + s->block_size - kCanarySize);
}

// Link n fresh blocks starting at `first` onto s->free in a shuffled order.
inline void carve(Slab* s, char* first, uint32_t n) {
  uint16_t order[kSliceSize / kMinAlign];
  for (uint32_t i = 0; i < n; ++i) order[i] = uint16_t(i);
  for (uint32_t i = n; i > 1; --i) {
    uint32_t j = uint32_t(next_random(s) % i);
    uint16_t t = order[i - 1];
    order[i - 1] = order[j];
    order[j] = t;
  }
  std::memset(first, 0xdf, size_t(n) * s->block_size);
  Block* head = s->free;
  for (uint32_t i = 0; i < n; ++i) {
    auto* b = reinterpret_cast<Block*>(first + size_t(order[i]) * s->block_size);
    block_set_next(s, b, head);
    head = b;
  }
  s->free = head;
}

// Take a block from s->free (non-empty): the first or the second, at random.
inline Block* pop(Slab* s) {
  Block* b = s->free;
  Block* next = block_next(s, b);
  if (next && (next_random(s) & 1)) {
    block_set_next(s, b, block_next(s, next));
    b = next;
  } else {
    s->free = next;
  }
  s->used++;
  // Everything but the link must still hold the fill: anything else was
  // written after the block was freed.
  const auto* w = reinterpret_cast<const uint64_t*>(b);
  uint64_t diff = 0;
  for (size_t i = 1, n = s->block_size / 8; i < n; ++i) diff |= w[i] ^ kFreeFill;
  if (diff) report_error(ErrorKind::kUseAfterFree, b, s->block_size);
  if (bit_set(s, index_of(s, b))) report_error(ErrorKind::kCorrupt, b, s->block_size);
  b->next = reinterpret_cast<Block*>(kFreeFill);
  *canary_slot(s, b) = canary(s, b);
  return b;
}

// A large span is handed out.
inline void span_alloc(Slab* s) { bit_set(s, 0); }

// b (a block start of live slab s) is being freed: it must be live and its
// canary intact; its contents are wiped before it is reused.
inline void on_free(Slab* s, Block* b) {
  if (!bit_clear(s, index_of(s, b))) return report_error(ErrorKind::kDoubleFree, b, s->block_size);
  if (s->kind == SliceKind::kLarge) {
    os::decommit(s->start, s->block_size);  // reads after free see zeros
    return;
  }
  if (*canary_slot(s, b) != canary(s, b)) report_error(ErrorKind::kOverflow, b, s->block_size);
  std::memset(b, 0xdf, s->block_size);
}

// Usable bytes of a block at offset off in s, 0 if it is not live.
inline size_t usable(const Slab* s, uint64_t block_off, uint64_t off) {
  if (!bit_test(s, uint32_t(block_off / s->block_size))) return 0;
  size_t tail = s->kind == SliceKind::kSlab ? kCanarySize : 0;
  return s->block_size - tail - (off - block_off);
}

}  // namespace granule::secure
