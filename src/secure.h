// The hardened build's checks (GRANULE_SECURE). Everything here is called
// only under `if constexpr (kSecure)`, so the default build's paths don't
// change. Per slab: an allocation bitmap in the segment header (exact
// double- and invalid-free detection; written by the owner only, remote
// frees mark the block and the owner clears the bit when it collects it),
// blocks carved in a shuffled order and popped from one of the first two
// places, a canary in each block's last bytes, and free blocks filled whole
// (their first 64 bytes and canary slot checked when handed out again).
// The owner's malloc and free run these checks inline (alloc.cpp).
#pragma once

#include <cstring>

#include "os/os.h"
#include "report.h"
#include "slab.h"

namespace granule::secure {

// The hardened build's report_error prints its line and aborts: callers on
// the hot paths need not keep anything alive across it.
[[noreturn]] __attribute__((cold, noinline)) inline void fail(ErrorKind kind, const void* p,
                                                              size_t class_bytes) {
  report_error(kind, p, class_bytes);
  __builtin_trap();  // not reached: the hardened report_error aborts
}

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

// The owner's random stream (only the owner carves and pops).
inline uintptr_t next_random(Heap* h) {
  uintptr_t x = h->key_state;
  x ^= x << 13, x ^= x >> 7, x ^= x << 17;
  h->key_state = x;
  return x;
}
inline uintptr_t next_random(Slab* s) { return next_random(s->heap); }

// A new slab: no block of it is live (a heap reset may have left bits set).
inline void slab_init(Slab* s) {
  s->secure_bits = bitmap_of(s);
  s->secure_tag_key = next_random(s) ^ (s->key * 0xc2b2ae3d27d4eb4full);
  std::memset(s->secure_bits, 0, size_t(s->slice_count) * kBitmapWordsPerSlice * 8);
}

// Class slabs: only the owner writes their bits (relaxed stores, plain movs
// on x86-64); other threads only read them. A remote free leaves its bit set
// and marks the block (secure_remote_tag); the owner clears the bit when it
// collects the block. Large spans (one block, freed by any thread) keep
// atomic read-modify-writes on their own words.
inline uint64_t* bit_word(const Slab* s, uint32_t i) { return &s->secure_bits[i >> 6]; }
inline bool bit_test(const Slab* s, uint32_t i) {
  return __atomic_load_n(bit_word(s, i), __ATOMIC_RELAXED) & (uint64_t{1} << (i & 63));
}
inline void owner_bit_set(const Slab* s, uint32_t i) {
  uint64_t* w = bit_word(s, i);
  __atomic_store_n(w, __atomic_load_n(w, __ATOMIC_RELAXED) | (uint64_t{1} << (i & 63)),
                   __ATOMIC_RELAXED);
}
inline void owner_bit_clear(const Slab* s, uint32_t i) {
  uint64_t* w = bit_word(s, i);
  __atomic_store_n(w, __atomic_load_n(w, __ATOMIC_RELAXED) & ~(uint64_t{1} << (i & 63)),
                   __ATOMIC_RELAXED);
}
// A block's bit: one per 16 bytes of the slab (the bitmap has room for
// that), so no division by the block size.
inline uint32_t index_of(const Slab* s, const void* b) {
  return uint32_t((uintptr_t(b) - uintptr_t(s->start)) >> 4);
}

inline uint64_t canary(const Slab* s, const void* b) {
  // One multiply; the fold makes the low (first overwritten) byte depend
  // on 40 bits of key ^ address.
  uint64_t x = (s->key ^ uintptr_t(b)) * 0xff51afd7ed558ccdull;
  return x ^ (x >> 32);
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

// Wipe a block of n bytes (a multiple of 16) with the fill: inline 16-byte
// stores for small blocks (a libc call costs more than the stores), memset
// for the rest.
inline constexpr size_t kFillInline = 1024;
inline void fill(void* b, size_t n) {
  if (n > kFillInline) {
    std::memset(b, 0xdf, n);
    return;
  }
  // Overlapping 16-byte stores: few branches, whatever n is.
  typedef uint64_t v2 __attribute__((vector_size(16), aligned(16)));
  const v2 f = {kFreeFill, kFreeFill};
  char* p = static_cast<char*>(b);
  char* e = p + n;
  auto st = [&](char* q) { *reinterpret_cast<v2*>(q) = f; };
  if (n <= 32) {
    st(p), st(e - 16);
  } else if (n <= 64) {
    st(p), st(p + 16), st(e - 32), st(e - 16);
  } else {
    do {
      st(p), st(p + 16), st(p + 32), st(p + 48);
      p += 64;
      __asm__("" ::"r"(p) : "memory");  // keep it a loop, not a memset call
    } while (p + 64 < e);
    st(e - 64), st(e - 48), st(e - 32), st(e - 16);
  }
}

// Bytes at the start of a free block checked on reuse (with the canary
// slot): a write after free lands there most often. The whole block was
// filled on free; checking all of it doubled the cost of a small malloc.
inline constexpr size_t kCheckedWords = 8;

// Take a block from s->free (non-empty): the first or the second, at random.
// h is the owner (s->heap).
inline Block* pop(Heap* h, Slab* s) {
  Block* b = s->free;
  Block* next = block_next(s, b);
  if (__builtin_expect(next != nullptr, 1)) {
    // Without a branch on the coin (it would mispredict half the time): the
    // taken block's link is overwritten below, so b's link may be set either way.
    // Not checked here: it is checked when b, which now links to it, is popped.
    Block* after = reinterpret_cast<Block*>(uintptr_t(next->next) ^ link_mask(s, next));
    uintptr_t pick = uintptr_t(0) - (next_random(h) & 1);  // all ones: take the second
    uintptr_t ub = uintptr_t(b), un = uintptr_t(next);
    block_set_next(s, b, reinterpret_cast<Block*>((uintptr_t(after) & pick) | (un & ~pick)));
    s->free = reinterpret_cast<Block*>((ub & pick) | (un & ~pick));
    b = reinterpret_cast<Block*>((un & pick) | (ub & ~pick));
  } else {
    s->free = nullptr;
  }
  s->used++;
  // The checked words and the canary slot must still hold the fill: anything
  // else was written after the block was freed.
  const auto* w = reinterpret_cast<const uint64_t*>(b);
  size_t n = s->block_size / 8;  // 2 at least
  uint64_t diff = (w[1] ^ kFreeFill) | (w[n - 1] ^ kFreeFill);
  if (__builtin_expect(n >= kCheckedWords, 1)) {
    for (size_t i = 2; i < kCheckedWords; ++i) diff |= w[i] ^ kFreeFill;  // unrolled
  } else {
    for (size_t i = 2; i < n - 1; ++i) diff |= w[i] ^ kFreeFill;
  }
  if (__builtin_expect(diff != 0, 0)) fail(ErrorKind::kUseAfterFree, b, s->block_size);
  uint32_t i = index_of(s, b);
  if (__builtin_expect(bit_test(s, i), 0)) fail(ErrorKind::kCorrupt, b, s->block_size);
  owner_bit_set(s, i);
  b->next = reinterpret_cast<Block*>(kFreeFill);
  *canary_slot(s, b) = canary(s, b);
  return b;
}
inline Block* pop(Slab* s) { return pop(s->heap, s); }

// A large span is handed out.
inline void span_alloc(Slab* s) {
  __atomic_fetch_or(&s->secure_bits[0], uint64_t{1}, __ATOMIC_RELAXED);
}

// Spans up to this size are wiped with the fill when freed; bigger ones are
// decommitted (reads after free see zeros). A memset of a span this size
// costs less than the madvise, its TLB shootdown and the page faults of the
// span's next use (aligned allocations over 16 KiB get such spans, and were
// 7x slower with decommit); above it, a span the program barely touched
// would have all its pages faulted in just to be wiped.
inline constexpr size_t kLargeFillMax = 256 * 1024;

// A large span's one block is being freed (any thread).
inline void on_free_large(Slab* s, Block* b) {
  uint64_t m = 1;
  if (!(__atomic_fetch_and(&s->secure_bits[0], ~m, __ATOMIC_RELAXED) & m))
    fail(ErrorKind::kDoubleFree, b, s->block_size);
  if (s->block_size <= kLargeFillMax)
    std::memset(s->start, 0xdf, s->block_size);
  else
    os::decommit(s->start, s->block_size);
}

// b (a block start of live class slab s) is being freed, by the owner
// (local) or by another thread: it must be live (its bit set, and not
// already freed remotely) and its canary intact; its contents are wiped.
// The owner clears the bit now; another thread marks the block, and the
// owner clears the bit when it collects it.
inline void on_free(Slab* s, Block* b, bool local) {
  uint32_t i = index_of(s, b);
  uint64_t* wp = bit_word(s, i);
  uint64_t w = __atomic_load_n(wp, __ATOMIC_RELAXED), m = uint64_t{1} << (i & 63);
  uint64_t mark = secure_remote_tag(s, b);
  if (__builtin_expect(!(w & m) || b->tag == mark, 0))
    fail(ErrorKind::kDoubleFree, b, s->block_size);
  if (__builtin_expect(*canary_slot(s, b) != canary(s, b), 0))
    fail(ErrorKind::kOverflow, b, s->block_size);
  if (local) __atomic_store_n(wp, w & ~m, __ATOMIC_RELAXED);
  fill(b, s->block_size);
  if (!local) b->tag = mark;
}

// The owner takes over a list of remotely freed blocks: each must be marked
// and still live in the bitmap (a block pushed twice shows here, if its
// second free raced past the mark check); its bit is cleared and its mark
// wiped. With `strict`, every block of the list must be marked; otherwise
// the walk stops at the first unmarked block (a list that continues with an
// abandoned owner's free blocks). Returns the last block walked.
inline Block* collect(Slab* s, Block* list, bool strict) {
  Block* tail = nullptr;
  for (Block* b = list; b; b = block_next(s, b)) {
    if (b->tag != secure_remote_tag(s, b)) {
      if (strict) fail(ErrorKind::kDoubleFree, b, s->block_size);
      break;
    }
    uint32_t i = index_of(s, b);
    if (!bit_test(s, i)) fail(ErrorKind::kDoubleFree, b, s->block_size);
    owner_bit_clear(s, i);
    b->tag = uintptr_t(kFreeFill);
    tail = b;
  }
  return tail;
}

// Usable bytes of a block at offset off in s, 0 if it is not live.
inline size_t usable(const Slab* s, uint64_t block_off, uint64_t off) {
  if (!bit_test(s, uint32_t(block_off >> 4))) return 0;
  if (s->kind == SliceKind::kSlab) {
    const auto* b = reinterpret_cast<const Block*>(s->start + block_off);
    if (b->tag == secure_remote_tag(s, b)) return 0;  // freed by another thread
  }
  size_t tail = s->kind == SliceKind::kSlab ? kCanarySize : 0;
  return s->block_size - tail - (off - block_off);
}

}  // namespace granule::secure
