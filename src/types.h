// The data layout shared by the segment, slab and heap layers: what a
// segment header holds, what a slab descriptor holds, what a heap holds.
// Operations live in segment.cpp, slab.cpp and heap.cpp.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "config.h"
#include "size_classes.h"
#include "sync.h"

namespace granule {

struct Heap;
struct Segment;

// A free block: the free-list link and a tag (key + address) that marks it
// free, so a second free of the same block is caught before it corrupts the
// list. Every block is at least 16 bytes, so both words fit.
struct Block {
  Block* next;
  uintptr_t tag;
};

enum class SliceKind : uint8_t {
  kFree = 0,  // not part of any slab (zero: a fresh segment needs no init)
  kSlab,      // head slice of a small/medium slab
  kLarge,     // head slice of a one-block large span
  kTail,      // a further slice of a multi-slice slab or span
};

// Where a slab is linked: the owner's queue (owner only) or the heap's ready
// list (under the heap lock). Detached slabs are in none.
enum class SlabList : uint8_t { kNone, kQueue, kReady };

// Slab::remote packs the list of blocks freed by other threads with a count
// and the slab's state, so one compare-and-swap moves all three at once:
//   bits 0..1  state, bits 4..47 first block, bits 48..63 count
enum RemoteState : uint64_t {
  kAttached = 0,  // the owner allocates from it; others only push frees
  kDetached = 1,  // full: the owner left it; frees are counted, the last one retires it
  kRetiring = 2,  // every block is free; the freer that saw it is returning the slices
  kQueued = 3,    // detached and linked in the heap's ready list (under the heap lock)
};
inline bool remote_detached(uint64_t w) { return (w & 1) != 0; }  // kDetached or kQueued
inline constexpr uint64_t kRemoteStateMask = 3;
inline constexpr uint64_t kRemotePtrMask = ((uint64_t{1} << 48) - 1) & ~uint64_t{15};
inline constexpr unsigned kRemoteCountShift = 48;

enum SlabFlags : uint8_t {
  kSlabHasAligned = 1,  // holds blocks handed out at an interior offset (aligned allocation)
};

// One descriptor per slice, in the segment header (never in user memory).
// The head slice's descriptor describes the whole slab.
struct alignas(128) Slab {
  // --- line 1: the owner's fast paths ---
  Block* free;         // owner-only allocation list
  Heap* fast_owner;    // the owning thread heap while its frees may take the fast path
  char* start;         // first block
  uint32_t limit;      // capacity * slab_step: bounds off * div_magic for carved block starts
  uint32_t used;       // blocks out of `free` (live, or freed remotely and not collected)
  uint64_t div_magic;  // ceil(2^64 / block_size) + 1: exact division and the block-start test
  uintptr_t key;       // random; free blocks carry key + address
  uint32_t block_size;
  uint32_t capacity;  // blocks carved
  uint32_t reserved;  // blocks that fit
  uint8_t size_class;
  SliceKind kind;
  SlabList list;
  uint8_t flags;
  // --- line 2: shared with other threads ---
  std::atomic<uint64_t> remote;
  Heap* heap;  // owner; heaps are never unmapped, so this stays valid
  Slab* next;  // in the owner queue or the heap's detached/ready list
  Slab* prev;
  uint16_t slice_count;     // head: slices in the slab
  uint16_t head_offset;     // tail: slices back to the head
  uint32_t dirty;           // committed slice: bytes from its start that slabs here have touched
  uint64_t free_since;      // kFree slices: when they became free (ms), for purging;
                            // an owner's empty medium slab: its heap's idle_epoch then
  uint64_t* secure_bits;    // hardened build: allocation bitmap (in the segment header)
  uint64_t secure_tag_key;  // hardened build: secret of the mark on blocks freed remotely
};
static_assert(sizeof(Slab) == 128);

inline uint64_t remote_pack(Block* b, uint64_t count, uint64_t state) {
  return uint64_t(uintptr_t(b)) | (count << kRemoteCountShift) | state;
}
inline Block* remote_ptr(uint64_t w) { return reinterpret_cast<Block*>(w & kRemotePtrMask); }
inline uint32_t remote_count(uint64_t w) { return uint32_t(w >> kRemoteCountShift); }
inline uint64_t remote_state(uint64_t w) { return w & kRemoteStateMask; }

// What the walks over a heap's segments read (searches for free slices, the
// idle decommit, the purge), one cache line per segment kept apart from the
// segment: the lines of a heap's nodes are few and stay cached, where a walk
// through the segment headers took one cache miss after another, each
// waiting for the last (6 us a large block when a program's own data had
// evicted them). Under the owning heap's lock.
struct alignas(64) SegmentNode {
  SegmentNode* next;  // heap's segment list
  SegmentNode* prev;
  Segment* seg;             // nullptr while spare (the heap's spare_nodes)
  uint64_t free_mask;       // slices not in any slab
  uint64_t committed_mask;  // slices whose memory is committed
  uint64_t purge_mask;      // free, committed slices waiting to be decommitted
  uint64_t retired_spans;   // first slices of retired large spans, reused last
  // No slice in purge_mask was freed before this (ms; a lower bound, made
  // exact by the walks that read the slices): the idle decommit and the
  // purge pass over segments whose slices are all too young without
  // reading them.
  uint64_t purge_since;
  // Second line, not read by the walks above: the heap's bins of segments
  // by their longest free run (kFreeBins) and longest free committed run
  // (kResidentBins); 0: no such run, in no bin (segment.cpp).
  alignas(64) SegmentNode* free_bin_next;
  SegmentNode* free_bin_prev;
  SegmentNode* resident_bin_next;
  SegmentNode* resident_bin_prev;
  uint8_t longest[2];
};
static_assert(sizeof(SegmentNode) == 128);

struct Segment {
  uint64_t cookie;       // kSegmentCookie ^ address
  Heap* heap;            // owner (under heap->lock)
  SegmentNode* node;     // list links and slice masks
  uint64_t purged_mask;  // decommitted by the delay, not taken since
  uint64_t offset_mask;  // decommitted early to offset growth, not taken since
  uint64_t empty_since;  // when the last slab left (0: not empty)
  alignas(128) Slab slabs[kSlicesPerSegment];
};
static_assert(sizeof(Segment) <= kSegmentHeaderSize - 4096,
              "the header must leave room for a guard page");

inline constexpr uint64_t kSegmentCookie = 0x67726e6c5365674dull;

inline Segment* segment_of(uintptr_t p) { return reinterpret_cast<Segment*>(p & ~kSegmentMask); }
inline Slab* slab_at(Segment* seg, uintptr_t p) {
  // Descriptor offset straight from the address bits: (slice index) * sizeof(Slab).
  constexpr unsigned kShift = kSliceShift - 7;
  static_assert(sizeof(Slab) == 128);
  uintptr_t off = (p >> kShift) & (uintptr_t(kSlicesPerSegment - 1) << 7);
  return reinterpret_cast<Slab*>(reinterpret_cast<char*>(seg) + offsetof(Segment, slabs) + off);
}
inline unsigned slice_index(const Slab* s) {
  return unsigned((uintptr_t(s) & kSegmentMask) - offsetof(Segment, slabs)) / sizeof(Slab);
}
inline Segment* segment_of(const Slab* s) { return segment_of(uintptr_t(s)); }
// First usable byte of slice i (slice 0 starts after the header).
inline char* slice_start(Segment* seg, unsigned i) {
  return reinterpret_cast<char*>(seg) + (i == 0 ? kSegmentHeaderSize : size_t(i) << kSliceShift);
}

// Segments filed by the length of a run of free slices: bin k holds those
// whose longest is k + 1 slices, and `nonempty` has a bit per bin in use.
struct RunBins {
  SegmentNode* bins[kSlicesPerSegment];
  uint64_t nonempty;
};

struct SlabQueue {
  Slab* head;
  Slab* tail;
};

// Blocks of one slab that a thread freed for another heap and holds back,
// linked head..tail, so that one compare-and-swap pushes them all.
struct RemoteRun {
  Slab* slab;  // nullptr: the slot is empty
  Block* head;
  Block* tail;
  uint32_t count;
};

enum class HeapKind : uint8_t { kThread, kFirstClass };
enum class HeapState : uint8_t { kLive, kAbandoned, kDestroyed };

struct HugeHeader;

// A destroyed heap is reused in place (heap_renew resets every field that is
// not a lock, a collector's epoch or claim, or spare_nodes: add new fields
// there).
struct Heap {
  // --- the malloc fast path reads only this table ---
  Slab* direct[kDirectCount] = {};  // slab to pop from for sizes up to kDirectMax (16-byte steps)
  SlabQueue queues[kClassCount] = {};  // attached slabs of each class; head is current
  uintptr_t key_state = 0;             // per-heap random stream for slab keys
  // --- slow paths ---
  SlowLock lock;  // segments, slices, detached and ready lists
  // Detached slabs with enough frees to reuse, a list per class (under lock),
  // and a bit per class whose list is not empty (written under lock, read
  // without it by the owner's slow path).
  Slab* ready[kClassCount] = {};
  std::atomic<uint64_t> ready_classes[(kClassCount + 63) / 64] = {};
  // (under lock; first-class heaps and g_thread_segments only) segments with
  // a free slice, and those without: searches for free slices never walk
  // what a large heap has filled.
  SegmentNode* segments = nullptr;
  SegmentNode* full_segments = nullptr;
  size_t full_segment_count = 0;
  SegmentNode* spare_nodes = nullptr;  // of segments released; kept when the heap is reused
  // Segments by their longest free run, and by their longest free committed
  // run (under lock; segment.cpp).
  RunBins run_bins[2] = {};
  // Per small class, in kExtentUnit: how much of its slice the slab last
  // returned to these segments had touched (0: none yet). The next one is
  // expected to touch as much (under lock).
  uint8_t small_extent[kSmallClassCount] = {};
  // Purge feedback (segment.cpp, under lock): how long free slices wait
  // (a level: a quarter of the delay, doubled per level), slices the wait
  // purged, slices taken back past the wait but within the longest one
  // (purged, or due at the next pass: a longer wait would have spared their
  // faults), and slices taken back resident in the last half of the wait (a
  // shorter one would have purged them).
  uint8_t purge_level = 0;
  uint32_t purged_slices = 0, retaken_slices = 0, spared_slices = 0;
  // Slices taken so far, and when segment_purge last saw that count change:
  // a heap that took none for a whole delay is idle, and its free slices
  // wait only the shortest wait.
  uint32_t slice_takes = 0, takes_seen = 0;
  uint64_t takes_seen_ms = 0;
  // Growth offsets (segment_decommit_idle, under lock): slices decommitted
  // before their wait, and those of them taken back before it (at least the
  // delay) would have ended. They halve with the counts above.
  uint32_t offset_slices = 0, offset_retaken = 0;
  size_t offset_due = 0;  // growth not offset yet: offsets go in batches (segment_decommit_idle)
  uint64_t feedback_since = 0;                    // ms: the counts above halve every ten delays
  std::atomic<HeapKind> kind{HeapKind::kThread};  // set while destroyed (heap_new)
  std::atomic<HeapState> state{HeapState::kLive};
  std::atomic<Heap*> registry_next{nullptr};  // all heaps ever made (never unlinked)
  Heap* pool_next = nullptr;                  // abandoned thread heaps / destroyed heaps, for reuse
  // --- first-class heaps ---
  SlowLock owner_lock;         // serialises allocation: the holder acts as owner
  size_t max_bytes = 0;        // 0: unbounded
  size_t held_bytes = 0;       // slices in slabs + huge mappings (under lock)
  HugeHeader* huge = nullptr;  // huge blocks of this heap (under lock)
  // --- statistics, owner-written, read racily on demand ---
  uint64_t blocks_handed = 0;  // blocks made available (carved or collected)
  uint64_t idle_epoch = 0;     // medium slabs kept empty so far (release_idle_medium)
  // --- remote frees held back (a live thread heap's own thread; see heap.cpp) ---
  // The owner works on its runs only while runs_epoch is odd; a collector
  // takes the runs of a thread that stopped freeing only while it has set
  // runs_claimed. A placeholder holds none: its epoch is odd for good.
  std::atomic<uint32_t> runs_epoch{0};
  std::atomic<bool> runs_claimed{false};
  std::atomic<uint32_t> runs_seen_epoch{0};  // the epoch a collector saw last
  std::atomic<uint64_t> runs_pending{0};     // a bit per non-empty slot of `runs`
  RemoteRun runs[kRemoteRunSlots] = {};
  const Slab* run_seen[kRemoteRunSlots] = {};  // the slab each slot's last remote free went to
  // --- the owner's queues, for a collector (a live thread heap; see heap.cpp) ---
  // The owner walks or changes its queues only while owner_epoch is odd
  // (owner_depth counts nested sections); a collector that set owner_claimed
  // takes the slabs there whose blocks other threads freed, every one.
  std::atomic<uint32_t> owner_epoch{0};
  uint32_t owner_depth = 0;
  std::atomic<bool> owner_claimed{false};
  std::atomic<uint32_t> owner_seen_epoch{0};  // the epoch a collector saw last

  constexpr Heap() = default;
  // The empty heap: every size points at a slab with no free block, so the
  // fast path needs no "initialised?" test.
  constexpr explicit Heap(Slab* empty, bool placeholder = false) : runs_epoch(placeholder ? 1 : 0) {
    for (auto& d : direct) d = empty;
  }
};

}  // namespace granule
