// Segments: kSegmentSize reservations aligned to their size, carved into
// 64 KiB slices, committed only as slices are used. A process-wide byte map
// says which segment-sized chunks of the address space are ours, so any
// pointer value can be tested in O(1) without locks.
#pragma once

#include <atomic>
#include <cstdint>

#include "types.h"

namespace granule {

inline constexpr size_t kMapEntries = size_t{1} << (kAddressBits - kSegmentShift);
enum MapKind : uint8_t {
  kMapNone = 0,
  kMapSegment,   // a segment of slabs and spans
  kMapHuge,      // first chunk of a huge block's mapping
  kMapHugeTail,  // further chunks of a huge mapping
};
// Plain bytes in zeroed static storage, accessed with atomic builtins: an
// array of 2^25 std::atomic would make clang (the sanitizer and fuzzer
// builds) constant-evaluate 2^25 constructors for constinit.
extern uint8_t g_segment_map[kMapEntries];

// Never faults, whatever p is.
inline unsigned map_kind(uintptr_t p) {
  uintptr_t i = p >> kSegmentShift;
  return i < kMapEntries ? unsigned(__atomic_load_n(&g_segment_map[i], __ATOMIC_RELAXED))
                         : unsigned(kMapNone);
}
void map_set(uintptr_t start, size_t size, MapKind first, MapKind rest);
void map_clear(uintptr_t start, size_t size);

// All of these run under heap->lock.
// A run of `count` free slices of h's segments (a new segment if needed),
// committed; the head descriptor is returned with kind kSlab and its tail
// descriptors linked. nullptr when the OS refuses memory, or, with
// `resident_only`, when no run of still-committed slices is free.
// Unit of the resident extents kept for free slices and small classes.
inline constexpr uint32_t kExtentUnit = 4096;
// A one-slice request takes the resident free slice whose touched bytes are
// closest to `touch`, the bytes the slab is expected to touch: a slab that
// stays small doesn't pin a slice a full slab left resident, and a full one
// reuses those pages instead of faulting in fresh ones.
Slab* segment_take_slices(Heap* h, unsigned count, bool avoid_slice0, bool resident_only = false,
                          uint32_t touch = kSliceSize);
// Grow live span `head` to `count` slices when the slices right after it
// are free and no resident run elsewhere could take it whole (under
// h->lock, h the segments' owner). False: nothing changed.
bool segment_extend_span(Heap* h, Slab* head, unsigned count);
// Give a slab's slices back to its segment; they are decommitted after the
// purge delay, and an empty segment released.
void segment_return_slices(Heap* h, Slab* head, uint64_t now);
// Decommit what has waited past the delay (everything free when force);
// release empty segments. Returns true when something is still waiting.
bool segment_purge(Heap* h, uint64_t now, bool force);
// h's resident set grows by `bytes`: decommit as much of its idle free
// slices now rather than after their delay (under h->lock).
void segment_decommit_idle(Heap* h, size_t bytes);
// Every segment of h, full or not (under h->lock; fn must not add or remove
// segments).
template <class Fn>
void segment_for_each(Heap* h, Fn fn) {
  for (SegmentNode* n = h->segments; n; n = n->next) fn(n->seg);
  for (SegmentNode* n = h->full_segments; n; n = n->next) fn(n->seg);
}
// Release every segment of h (heap destroy); no slab may be live after.
void segment_release_all(Heap* h);
// Make every slice of every segment of h free again, keeping the segments.
void segment_reset_all(Heap* h, uint64_t now);
// Reserve segments up front for a first-class heap (bytes rounded up).
bool segment_reserve_ahead(Heap* h, size_t bytes);

// Slab::fast_owner is read by every thread's free fast path (a non-owner
// just sees a mismatch); relaxed atomics, a plain mov on x86-64.
inline Heap* slab_fast_owner(const Slab* s) {
  return __atomic_load_n(&s->fast_owner, __ATOMIC_RELAXED);
}
inline void slab_set_fast_owner(Slab* s, Heap* h) {
  __atomic_store_n(&s->fast_owner, h, __ATOMIC_RELAXED);
}

// Slices that hold `bytes`, rounded up.
inline size_t slices_for(size_t bytes) { return (bytes + kSliceSize - 1) >> kSliceShift; }
// Slices that hold `bytes` in any run off slice 0 (whose header takes its
// start): in the hardened build a run may end at the segment's guard page.
inline size_t slices_holding(size_t bytes) {
  return slices_for(bytes + (kSecure ? kGuardSize : 0));
}

// Bytes of a slice range, as committed by the OS layer.
inline size_t slices_bytes(unsigned first, unsigned count) {
  size_t end = size_t(first + count) << kSliceShift;
  size_t begin = first == 0 ? kSegmentHeaderSize : size_t(first) << kSliceShift;
  if constexpr (kSecure) {
    if (first + count == kSlicesPerSegment) end -= kGuardSize;
  }
  return end - begin;
}

}  // namespace granule
