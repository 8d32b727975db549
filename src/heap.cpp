#include "heap.h"

#include <cerrno>
#include <cstring>
#include <new>

#include "huge.h"
#include "meta.h"
#include "options.h"
#include "os/os.h"
#include "purge.h"
#include "report.h"
#include "secure.h"
#include "segment.h"
#include "stats.h"

namespace granule {

void register_fork_handlers();  // init.cpp

constinit Slab g_empty_slab{};
constinit Heap g_empty_heap{&g_empty_slab, true};
constinit Heap g_exited_heap{&g_empty_slab, true};
constinit Heap g_thread_segments;
#if !defined(_WIN32)
constinit thread_local Heap* tl_heap = &g_empty_heap;
#endif

namespace {

std::atomic<Heap*> g_registry{nullptr};
SlowLock g_pool_lock;       // the two pools below
SlowLock g_runs_collector;  // one collector of held-back runs at a time: a set claim is its own
// Looks at other owners' queues since the last purge pass that had other
// work, or since a hint that an idle owner may have a slab to take.
std::atomic<unsigned> g_slab_looks_since_busy{0};
Heap* g_abandoned = nullptr;  // thread heaps whose thread exited
Heap* g_spare = nullptr;      // destroyed first-class heaps

// For each direct-table slot, its class; for each class, its slot range.
struct DirectMap {
  uint8_t cls[kDirectCount];
  uint8_t first[kClassCount], last[kClassCount];
  constexpr DirectMap() : cls(), first(), last() {
    for (unsigned c = 0; c < kClassCount; ++c) first[c] = 1, last[c] = 0;
    for (unsigned j = 0; j < kDirectCount; ++j) {
      unsigned c = size_class_of(j * 16);
      cls[j] = uint8_t(c);
      if (first[c] > last[c]) first[c] = uint8_t(j);
      last[c] = uint8_t(j);
    }
  }
};
constexpr DirectMap kDirect;

inline uintptr_t next_key(Heap* h) {
  // xorshift: cheap, and only needs to be unpredictable to the program.
  uintptr_t x = h->key_state;
  x ^= x << 13, x ^= x >> 7, x ^= x << 17;
  h->key_state = x;
  return x | 1;
}

// ---- sections: the owner's half of the collectors' pairings ----
// For owner sections (below) and runs_enter's alike: open a section at the
// even epoch e and test the claim; a claim closes it again
// (the epoch moves on to e + 2) and says so. No fence: the collector's
// barrier orders the store before the test.
inline bool epoch_enter(std::atomic<uint32_t>& epoch, const std::atomic<bool>& claimed,
                        uint32_t e) {
  epoch.store(e + 1, std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  if (__builtin_expect(!claimed.load(std::memory_order_acquire), 1)) return true;
  epoch.store(e + 2, std::memory_order_release);
  return false;
}

// ---- the owner's queues: sections, for a collector ----
// Other threads' frees to an attached slab wait on its remote list until the
// owner collects them, and an owner that went idle keeps such slabs for as
// long as it idles, even once every block in them is free. A collector
// takes a slab whose blocks are all free (`used`, the blocks out of the
// local list, equals its remote count) from inside a queue, never an end:
// no fast path touches such a slab again (malloc pops only from heads, a
// local free needs a live block, heap_slab_empty reads only the ends), and
// the local free stores `used` last, with release, so the collector that
// reads the count sees that free's other stores. What remains is the
// owner's slow paths, which walk and change the queues: they run in a
// section (odd owner_epoch) paired with owner_claimed as runs_enter's is
// with runs_claimed. Sections nest; the outermost waits while a collector
// holds the claim (it holds no lock there, and a collector holds a claim
// only briefly, never on its own heap).
class OwnerSection {
 public:
  explicit OwnerSection(Heap* h) : h_(h) {
    if (h->owner_depth++ != 0) return;
    while (!epoch_enter(h->owner_epoch, h->owner_claimed,
                        h->owner_epoch.load(std::memory_order_relaxed))) {
      while (h->owner_claimed.load(std::memory_order_acquire)) os::yield();
    }
  }
  ~OwnerSection() {
    if (--h_->owner_depth == 0)
      h_->owner_epoch.store(h_->owner_epoch.load(std::memory_order_relaxed) + 1,
                            std::memory_order_release);
  }
  OwnerSection(const OwnerSection&) = delete;
  OwnerSection& operator=(const OwnerSection&) = delete;

 private:
  Heap* h_;
};

// ---- the owner's class queues (owner only) ----

void direct_update(Heap* h, unsigned c) {
  if (c >= kClassCount || kDirect.first[c] > kDirect.last[c]) return;
  Slab* s = h->queues[c].head;
  if (!s) s = &g_empty_slab;
  for (unsigned j = kDirect.first[c]; j <= kDirect.last[c]; ++j) h->direct[j] = s;
}

// Link s into its class queue: at the front (allocated from next) or at the
// back (gathers frees before its turn comes).
void queue_insert(Heap* h, Slab* s, bool front) {
  SlabQueue& q = h->queues[s->size_class];
  Slab*& end = front ? q.head : q.tail;
  Slab*& other_end = front ? q.tail : q.head;
  (front ? s->next : s->prev) = end;
  (front ? s->prev : s->next) = nullptr;
  if (end)
    (front ? end->prev : end->next) = s;
  else
    other_end = s;
  end = s;
  s->list = SlabList::kQueue;
  slab_set_fast_owner(s, heap_is_thread(h) ? h : nullptr);
  if (q.head == s) direct_update(h, s->size_class);
}
void queue_push_front(Heap* h, Slab* s) { queue_insert(h, s, true); }
void queue_push_back(Heap* h, Slab* s) { queue_insert(h, s, false); }

void queue_remove(Heap* h, Slab* s) {
  SlabQueue& q = h->queues[s->size_class];
  bool was_head = q.head == s;
  if (s->prev)
    s->prev->next = s->next;
  else
    q.head = s->next;
  if (s->next)
    s->next->prev = s->prev;
  else
    q.tail = s->prev;
  s->next = s->prev = nullptr;
  s->list = SlabList::kNone;
  slab_set_fast_owner(s, nullptr);
  if (was_head) direct_update(h, s->size_class);
}

// ---- the heap's ready lists (under h->lock) ----
// Detached slabs are in no list: nobody needs to find them until enough of
// their blocks come back (then they join their class's ready list) or all do
// (then the last freer retires them). The owner takes back only the class it
// allocates: a slab it took back belongs to it again, and an idle owner never
// collects it, while a detached one goes back to its segment the moment its
// last block does.

std::atomic<uint64_t>& ready_word(Heap* h, unsigned c) { return h->ready_classes[c / 64]; }
uint64_t ready_bit(unsigned c) { return uint64_t{1} << (c % 64); }

void ready_push(Heap* h, Slab* s) {
  unsigned c = s->size_class;
  s->prev = nullptr;
  s->next = h->ready[c];
  if (s->next)
    s->next->prev = s;
  else
    ready_word(h, c).fetch_or(ready_bit(c), std::memory_order_relaxed);
  h->ready[c] = s;
  s->list = SlabList::kReady;
}

void ready_remove(Heap* h, Slab* s) {
  unsigned c = s->size_class;
  if (s->prev)
    s->prev->next = s->next;
  else
    h->ready[c] = s->next;
  if (s->next) s->next->prev = s->prev;
  if (!h->ready[c]) ready_word(h, c).fetch_and(~ready_bit(c), std::memory_order_relaxed);
  s->next = s->prev = nullptr;
  s->list = SlabList::kNone;
}

// The owner takes a detached slab back: its counted frees become the free
// list. `from` is the state to leave (kDetached, or kQueued under h->lock);
// false if the slab is in another state (being retired, or queued).
bool reattach(Heap* h, Slab* s, uint64_t from) {
  uint64_t w = s->remote.load(std::memory_order_relaxed);
  do {
    if (remote_state(w) != from) return false;
  } while (!s->remote.compare_exchange_weak(w, kAttached, std::memory_order_acquire,
                                            std::memory_order_relaxed));
  if (from == kQueued) ready_remove(h, s);
  if constexpr (kSecure) secure::collect(s, remote_ptr(w), false);
  s->free = remote_ptr(w);
  s->used = s->capacity - remote_count(w);
  h->blocks_handed += remote_count(w);
  return true;
}

// The owner takes back class c's ready slabs. True if there were any.
bool reattach_ready(Heap* h, unsigned c) {
  if (!(ready_word(h, c).load(std::memory_order_relaxed) & ready_bit(c))) return false;
  LockGuard guard(h->lock);
  for (Slab *s = h->ready[c], *next; s; s = next) {
    next = s->next;
    if (reattach(h, s, kQueued)) queue_push_front(h, s);
  }
  return true;
}

// A full slab leaves the owner: from now on frees to it are counted, and the
// last one returns its slices. No lock: the slab joins no list. False if
// frees arrived meanwhile.
bool detach(Heap* h, Slab* s) {
  // Unlinked before the state changes: once detached, a freer may link it
  // into the ready list.
  queue_remove(h, s);
  uint64_t expected = kAttached;
  if (!s->remote.compare_exchange_strong(expected, kDetached, std::memory_order_acq_rel)) {
    queue_push_front(h, s);
    return false;
  }
  return true;
}

// A slab's slices go back where its heap took them from (under h->lock,
// which comes before the shared segments' lock).
void return_slices(Heap* h, Slab* s, uint64_t now) {
  Heap* home = slice_home(h);
  if (home == h) return segment_return_slices(h, s, now);
  LockGuard guard(home->lock);
  segment_return_slices(home, s, now);
}

void retire_locked(Heap* h, Slab* s) {
  if (s->list == SlabList::kReady) ready_remove(h, s);
  return_slices(h, s, os::now_ms());
}

// An owner's empty slab goes back to its segment. Out of line, so that
// heap_slab_empty's common outcome (the slab is kept) saves no registers.
__attribute__((noinline)) void release_empty(Heap* h, Slab* s) {
  // A Windows process past ExitProcess: a killed thread may hold the locks,
  // and the memory goes back with the process. The slab stays queued, empty.
  if (os::process_exiting()) return;
  OwnerSection section(h);  // nests inside alloc_class's
  queue_remove(h, s);
  {
    LockGuard guard(h->lock);
    return_slices(h, s, os::now_ms());
  }
  purge_notify();
}

// A program that allocates one big buffer after another, each of a new size
// (an interpreter reading its files), would otherwise leave one empty slab
// per medium class, each holding the pages its last block touched. When a
// new medium slab finds no free slices still resident, those go back first,
// so it reuses their pages; all but the two emptied last, so a program
// cycling through a few sizes doesn't make and drop a slab per malloc.
constexpr uint64_t kIdleMediumKept = 2;
// At most two slabs in the queue: where a medium class keeps an empty one
// (medium_slab_empty).
bool short_queue(const SlabQueue& q) { return q.head == q.tail || q.head->next == q.tail; }
void release_idle_medium(Heap* h, unsigned except) {
  for (unsigned c = kSmallClassCount; c < kClassCount; ++c) {
    const SlabQueue& q = h->queues[c];
    if (c == except || !q.head || !short_queue(q)) continue;
    Slab* s = q.head->used == 0 ? q.head : q.tail;
    if (s->used == 0 && s->free_since + kIdleMediumKept <= h->idle_epoch) release_empty(h, s);
  }
}

// A medium slab that empties stays while its queue is short and the other
// slab there, if any, holds blocks. A medium slab holds eight blocks or so,
// so a class whose live blocks swing between one slab's worth and two would
// otherwise give a slab back and take a new one at every swing, through the
// shared segments' lock and with its blocks carved anew (20 000-byte blocks
// swinging between 6 and 20 live: 0.385 -> 0.282 s for 20 M steps). Still
// at most one empty slab per class, given back when other sizes need
// resident pages (release_idle_medium). Small classes keep one only when it
// is alone: nothing hands theirs on that way, and kept beside another they
// cost the aligned workload 3 % of its peak. In a section: a collector may
// relink the middle of a longer queue.
__attribute__((noinline)) void medium_slab_empty(Heap* h, Slab* s) {
  OwnerSection section(h);
  const SlabQueue& q = h->queues[s->size_class];
  Slab* other = q.head == s ? q.tail : q.head;  // in a short queue
  if (!short_queue(q) || (other != s && other->used == 0)) return release_empty(h, s);
  s->free_since = ++h->idle_epoch;
}

}  // namespace

// Freshly mapped pages of a huge block grow the resident set as fresh slices
// do (segment_take_slices), so h's idle slices go back as much. Out of line:
// inlined into calloc, its lock loop made every small calloc save and
// restore four more registers (103 -> 111 instructions).
__attribute__((noinline)) void* heap_alloc_huge(Heap* h, size_t size, size_t alignment, bool zero) {
  size_t fresh;
  void* p = huge_alloc(heap_is_thread(h) ? nullptr : h, size, alignment, zero, &fresh);
  heap_offset_growth(h, fresh);
  return p;
}

namespace {

// slices: class_slab_slices(c), or fewer for a short slab (new_slab).
Slab* take_slices(Heap* h, unsigned c, bool resident_only, unsigned slices) {
  Heap* home = slice_home(h);
  LockGuard guard(home->lock);
  if (h->max_bytes && h->held_bytes + (size_t(slices) << kSliceShift) > h->max_bytes) {
    return nullptr;
  }
  // A small slab is expected to touch as much of its slice as the last one
  // of its class did.
  uint8_t pages = c < kSmallClassCount ? home->small_extent[c] : 0;
  // A short slab stays off slice 0, whose header would leave it no block.
  bool short_slab = slices < class_slab_slices(c);
  return segment_take_slices(home, slices, short_slab, resident_only,
                             pages ? pages * kExtentUnit : uint32_t(kSliceSize));
}

Slab* new_slab(Heap* h, unsigned c) {
  bool medium = c >= kSmallClassCount;
  unsigned slices = class_slab_slices(c);
  Slab* s = take_slices(h, c, medium, slices);
  if (!s && medium) {
    release_idle_medium(h, c);
    s = take_slices(h, c, true, slices);
    // Resident runs too short for a whole slab (what other classes just gave
    // back, a buffer at a time) still hold a few blocks: a short slab there
    // reuses their pages where a whole one would fault in fresh ones.
    auto one_block = unsigned(slices_holding(class_block_size(c)));
    if (!s && one_block < slices) s = take_slices(h, c, true, one_block);
    if (!s) s = take_slices(h, c, false, slices);
  }
  if (!s) return nullptr;
  slab_init(s, h, c, next_key(h));
  queue_push_front(h, s);
  return s;
}

inline void* pop(Slab* s) {
  if constexpr (kSecure) return secure::pop(s);
  Block* b = s->free;
  s->free = b->next;
  s->used++;
  b->tag = 0;
  return b;
}

// ---- runs held back: the owner's side ----
// The owner touches its runs only inside a section: runs_enter bumps
// runs_epoch to odd, runs_leave to even (a placeholder's is odd for good).
// A collector (the purge thread, or gr_collect on any thread) takes the runs
// of a thread that stopped freeing: a consumer waiting for work would
// otherwise keep them, and the slabs they pin, for as long as it waits. It
// sets runs_claimed, runs a process barrier, and takes them only if the
// epoch is still the even one it read. The barrier makes the owner's epoch
// store and its test of the claim an asymmetric Dekker pair, so the owner
// needs no fence (hot: a test, a store, a compiler barrier, a test). Not
// re-entrant: a push can start the purge thread, which allocates, so a
// section opened inside one is refused (odd epoch) and the caller goes
// without runs.
inline bool runs_enter(Heap* h, uint32_t& e) {
  e = h->runs_epoch.load(std::memory_order_relaxed);
  return !(e & 1) && epoch_enter(h->runs_epoch, h->runs_claimed, e);
}

// e: the epoch runs_enter read.
inline void runs_leave(Heap* h, uint32_t e) {
  h->runs_epoch.store(e + 2, std::memory_order_release);
}

void flush_runs(Heap* h);

void* alloc_class(Heap* h, unsigned c) {
  OwnerSection section(h);
  // The owner's slow path: the frees this thread held back for other heaps
  // go now, so they wait at most as long as one of its own slabs lasts
  // (threads that exchange blocks both ways get theirs back as they need
  // them).
  uint32_t e;
  if (h->runs_pending.load(std::memory_order_relaxed) && runs_enter(h, e)) {
    flush_runs(h);
    runs_leave(h, e);
  }
  for (;;) {
    Slab* s = h->queues[c].head;
    while (s) {
      if (s->free) return pop(s);
      uint32_t before = s->capacity;
      if (slab_collect(s) || slab_extend(s)) {
        h->blocks_handed += s->capacity - before;
        return pop(s);
      }
      Slab* next = s->next;
      if (!detach(h, s)) continue;  // frees arrived: collect them
      s = next;
    }
    if (reattach_ready(h, c) && h->queues[c].head) continue;
    if (!new_slab(h, c)) return nullptr;
  }
}

void* alloc_large(Heap* h, size_t size, size_t alignment) {
  // aligned_alloc(64 KiB, 0) would ask for a span of no slice (a division by
  // zero), and with a larger alignment could land just past its span.
  if (size == 0) size = 1;
  size_t need = size + (alignment > kSliceSize ? alignment - kSliceSize : 0);
  size_t slices = slices_holding(need);
  if (slices >= kSlicesPerSegment) return heap_alloc_huge(h, size, alignment, false);
  Slab* s;
  {
    Heap* home = slice_home(h);
    LockGuard guard(home->lock);
    if (h->max_bytes && h->held_bytes + (slices << kSliceShift) > h->max_bytes) return nullptr;
    s = segment_take_slices(home, unsigned(slices), true);
    if (!s) return nullptr;
    slab_init_large(s, h, next_key(h));
    if constexpr (kSecure) secure::span_alloc(s);
    // Born detached: its one free returns the span.
    s->remote.store(kDetached, std::memory_order_relaxed);
  }
  char* p = s->start;
  reinterpret_cast<Block*>(p)->tag = 0;  // a live block must not look free
  if (alignment > kSliceSize) {
    p = reinterpret_cast<char*>((uintptr_t(p) + alignment - 1) & ~(uintptr_t(alignment) - 1));
    s->flags |= kSlabHasAligned;
  }
  h->blocks_handed++;
  return p;
}

// Smallest class whose blocks are all aligned to `alignment` (slab starts
// are 16 KiB-aligned at least), or kClassCount.
unsigned aligned_class(size_t size, size_t alignment) {
  constexpr size_t kSlabStartAlign = kSegmentHeaderSize & (~kSegmentHeaderSize + 1);
  if (alignment > kSlabStartAlign || size > kMediumMax) return kClassCount;
  for (unsigned c = size_class_of(size < alignment ? alignment : size); c < kClassCount; ++c) {
    if (class_block_size(c) % alignment == 0) return c;
  }
  return kClassCount;
}

// ---- freeing ----

// The owner frees into its own slab; re-attaches it first if it was full.
// It goes to the back of the queue: it gathers more frees there before it is
// allocated from again, instead of flipping between full and not per block.
void free_local(Heap* h, Slab* s, Block* b) {
  if (remote_state(s->remote.load(std::memory_order_relaxed)) != kAttached) {
    bool back = reattach(h, s, kDetached);
    if (!back) {
      LockGuard guard(h->lock);
      back = reattach(h, s, kQueued);
    }
    if (!back) {
      // Being retired: impossible while b is live, so b was already free.
      report_error(ErrorKind::kDoubleFree, b, s->block_size);
      return;
    }
    queue_push_back(h, s);
  }
  block_set_next(s, b, s->free);
  b->tag = block_tag(s, b);
  s->free = b;
  if (--s->used == 0) heap_slab_empty(h, s);
}

// What a remote free's push set off: the slab emptied or became ready.
// Out of line, so that free_remote's common outcome (pushed, nothing more)
// does not save and restore the registers the lock paths need.
__attribute__((noinline)) void remote_free_done(Heap* owner, Slab* s, RemoteFree outcome) {
  // Past ExitProcess (release_empty): a detached slab stays as it is, its
  // blocks counted free.
  if (outcome != RemoteFree::kPushed && os::process_exiting()) return;
  switch (outcome) {
    case RemoteFree::kPushed:
      return;
    case RemoteFree::kAllBack:
      // The owner may be idle: the purge thread looks at its queues (twice,
      // a purge delay apart, as after any work).
      if (g_slab_looks_since_busy.load(std::memory_order_relaxed) != 0)
        g_slab_looks_since_busy.store(0, std::memory_order_relaxed);
      purge_notify();
      return;
    case RemoteFree::kNowEmpty: {
      {
        LockGuard guard(owner->lock);
        retire_locked(owner, s);
      }
      // Outside the lock: the first notify starts the purge thread, and
      // pthread_create allocates through us (the same heap, the same lock).
      purge_notify();
      return;
    }
    case RemoteFree::kNowReady: {
      LockGuard guard(owner->lock);
      // Other frees may have retired the slab since our push, and another
      // heap may have taken its slices; the lock of the segments keeps them
      // mapped while we look. Move it only if it is still one of the owner's
      // detached slabs: the state is read first, so a detached slab of
      // another heap shows that heap as its owner.
      Heap* home = slice_home(owner);
      if (home != owner) home->lock.lock();
      Segment* seg = segment_of(s);
      if (map_kind(uintptr_t(seg)) == kMapSegment && seg->heap == home &&
          s->kind == SliceKind::kSlab) {
        // kDetached -> kQueued before linking: the owner may reattach a
        // kDetached slab without the lock, never a kQueued one.
        uint64_t w = s->remote.load(std::memory_order_acquire);
        bool mine = false;
        while (remote_state(w) == kDetached && (mine = s->heap == owner) &&
               !s->remote.compare_exchange_weak(w, (w & ~kRemoteStateMask) | kQueued,
                                                std::memory_order_acq_rel,
                                                std::memory_order_acquire)) {
        }
        if (remote_state(w) == kDetached && mine) ready_push(owner, s);
      }
      if (home != owner) home->lock.unlock();
      return;
    }
  }
}

// Push blocks head..tail (linked, tagged free) onto s's remote list: one
// compare-and-swap, no lock.
void push_remote(Slab* s, Block* head, Block* tail, uint32_t count) {
  Heap* owner = s->heap;  // read while the blocks keep the slab alive
  RemoteFree outcome = slab_push_remote(s, head, tail, count);
  if (__builtin_expect(outcome != RemoteFree::kPushed, 0)) remote_free_done(owner, s, outcome);
}

// One cross-thread free, pushed now.
void free_remote(Slab* s, Block* b, uintptr_t tag) {
  if constexpr (!kSecure) b->tag = tag;  // the hardened build marked it in secure::on_free
  push_remote(s, b, b, 1);
}

void flush_run(Heap* h, unsigned i) {
  RemoteRun r = h->runs[i];
  h->runs[i].slab = nullptr;
  h->runs_pending.store(h->runs_pending.load(std::memory_order_relaxed) & ~(uint64_t{1} << i),
                        std::memory_order_relaxed);
  push_remote(r.slab, r.head, r.tail, r.count);
}

// Every run h holds back goes to its slab now (inside a section).
void flush_runs(Heap* h) {
  while (uint64_t m = h->runs_pending.load(std::memory_order_relaxed))
    flush_run(h, unsigned(__builtin_ctzll(m)));
}

// Thread exit and gr_collect: every run goes, so a collector's claim is
// waited out (it holds one only while it copies the runs out).
void flush_runs_now(Heap* h) {
  while (h->runs_pending.load(std::memory_order_relaxed)) {
    uint32_t e;
    if (runs_enter(h, e)) {
      flush_runs(h);
      return runs_leave(h, e);
    }
    if (e & 1) return;  // inside a section already
    os::yield();
  }
}

// A destroyed heap's object made new for reuse, field by field and under
// its locks: it stays in the registry, so collectors may be reading it, or
// holding its lock, meanwhile. Its locks and the epochs and claims of the
// collectors' pairings (even, unclaimed, as a destroyed heap leaves them)
// stay as they are, and so do the spare nodes of its released segments
// (metadata, never freed). Every other field of Heap is reset here.
void heap_renew(Heap* h) {
  LockGuard owner(h->owner_lock);
  LockGuard guard(h->lock);
  for (auto& d : h->direct) d = &g_empty_slab;
  for (auto& q : h->queues) q = {};
  for (auto& r : h->ready) r = nullptr;
  for (auto& w : h->ready_classes) w.store(0, std::memory_order_relaxed);
  h->segments = h->full_segments = nullptr;  // heap_destroy released them
  h->full_segment_count = 0;
  for (auto& b : h->run_bins) b = {};
  for (auto& e : h->small_extent) e = 0;
  h->purge_level = 0;
  h->purged_slices = h->retaken_slices = h->spared_slices = 0;
  h->offset_slices = h->offset_retaken = 0;
  h->slice_takes = h->takes_seen = 0;
  h->takes_seen_ms = 0;
  h->offset_due = 0;
  h->feedback_since = 0;
  h->pool_next = nullptr;
  h->max_bytes = h->held_bytes = 0;
  h->huge = nullptr;
  h->blocks_handed = h->idle_epoch = 0;
  h->runs_pending.store(0, std::memory_order_relaxed);
  for (auto& r : h->runs) r = {};
  for (auto& r : h->run_seen) r = nullptr;
  h->owner_depth = 0;
}

// The kind is set before the heap reads as live: a collector that sees a
// live heap (acquire) sees its kind.
Heap* heap_new(HeapKind kind) {
  Heap* h = nullptr;
  {
    LockGuard guard(g_pool_lock);
    if (g_spare) {
      h = g_spare;
      g_spare = h->pool_next;
    }
  }
  if (h) {
    heap_renew(h);
    h->kind.store(kind, std::memory_order_relaxed);
  } else {
    void* mem = meta_alloc(sizeof(Heap));
    if (!mem) return nullptr;
    h = new (mem) Heap(&g_empty_slab);
    h->kind.store(kind, std::memory_order_relaxed);
    h->state.store(HeapState::kDestroyed, std::memory_order_relaxed);
    Heap* head = g_registry.load(std::memory_order_relaxed);
    do {
      h->registry_next.store(head, std::memory_order_relaxed);
    } while (!g_registry.compare_exchange_weak(head, h, std::memory_order_release,
                                               std::memory_order_relaxed));
  }
  h->key_state = os::random_seed() ^ uintptr_t(h);
  h->state.store(HeapState::kLive, std::memory_order_release);
  return h;
}

// An owner gives up an attached slab (already out of its queue): an empty
// one goes back to its segment; otherwise it becomes detached with its free
// blocks pre-counted, so later frees return it without an owner. Any free
// block makes it ready: the next thread to take this heap then fills the
// holes its last owner left before it carves a new slab (threads that come
// and go one after another would otherwise stack up a slab per class each).
void hand_over(Heap* h, Slab* s) {
  for (;;) {
    slab_collect(s);
    LockGuard guard(h->lock);
    if (s->used == 0) {
      return_slices(h, s, os::now_ms());
      return;
    }
    uint32_t free_count = s->capacity - s->used;
    bool ready = free_count > 0;
    uint64_t expected = kAttached;
    if (s->remote.compare_exchange_strong(
            expected, remote_pack(s->free, free_count, ready ? kQueued : kDetached),
            std::memory_order_acq_rel)) {
      s->free = nullptr;
      if (ready) ready_push(h, s);
      return;
    }
    // A free raced in: collect it too.
  }
}

// Park a heap without an owner for the next new thread (under g_pool_lock,
// or in a fork child, where no other thread exists).
void park_abandoned(Heap* h) {
  h->state.store(HeapState::kAbandoned, std::memory_order_release);
  h->pool_next = g_abandoned;
  g_abandoned = h;
}

// Keep a destroyed first-class heap's object for reuse.
void park_spare(Heap* h) {
  h->state.store(HeapState::kDestroyed, std::memory_order_release);
  LockGuard pool(g_pool_lock);
  h->pool_next = g_spare;
  g_spare = h;
}

// The owner thread leaves: every attached slab is handed over.
void heap_abandon(Heap* h) {
  flush_runs_now(h);
  {
    OwnerSection section(h);
    for (unsigned c = 0; c < kClassCount; ++c) {
      while (Slab* s = h->queues[c].head) {
        queue_remove(h, s);
        hand_over(h, s);
      }
    }
  }
  LockGuard guard(g_pool_lock);
  park_abandoned(h);
}

// fork() child: only the forking thread survives, so every other live
// thread heap has lost its owner for good. Give its slabs the treatment
// heap_abandon gives a heap whose thread exited, so later frees return their
// memory and new threads in the child reuse the heap. The owner may have been
// stopped anywhere outside the locks (before_fork holds every heap lock), so
// its queue links or one slab's counts may be half-updated: walk the links
// without trusting them (validate each slab, never revisit one, bound the
// walk) and forget the queues instead of unlinking. A block the stopped owner
// was taking or giving back is at worst leaked. No other thread exists to
// race with, so hand_over's compare-and-swap succeeds at once.
void abandon_in_child(Heap* h) {
  // Its held-back runs may be half-updated: their blocks are leaked.
  h->runs_pending.store(0, std::memory_order_relaxed);
  for (RemoteRun& r : h->runs) r.slab = nullptr;
  h->runs_epoch.store(0, std::memory_order_relaxed);
  // It may have been inside a section too.
  h->owner_epoch.store(0, std::memory_order_relaxed);
  h->owner_depth = 0;
  for (unsigned c = 0; c < kClassCount; ++c) {
    Slab* s = h->queues[c].head;
    h->queues[c] = {};
    for (unsigned steps = 0; s && steps < (1u << 20); ++steps) {
      Segment* seg = segment_of(s);
      uintptr_t at = uintptr_t(s) - uintptr_t(seg->slabs);
      if (map_kind(uintptr_t(seg)) != kMapSegment || at >= sizeof(seg->slabs) ||
          at % sizeof(Slab) != 0 || seg->heap != slice_home(h) || s->kind != SliceKind::kSlab ||
          s->list != SlabList::kQueue || s->heap != h) {
        break;
      }
      Slab* next = s->next;
      s->next = s->prev = nullptr;
      s->list = SlabList::kNone;
      slab_set_fast_owner(s, nullptr);
      hand_over(h, s);
      s = next;
    }
    direct_update(h, c);
  }
  park_abandoned(h);
}

void thread_exit(void* value) {
  auto* h = static_cast<Heap*>(value);
  if (!h || heap_is_placeholder(h)) return;
  // The exiting thread of a Windows process that is ending: the purge thread
  // or any other may have been killed holding a lock handing over needs, and
  // nothing outlives the process to reuse the slabs.
  if (os::process_exiting()) return;
  heap_abandon(h);
  heap_set_current(&g_exited_heap);
  bool others_live = false;
  heap_for_each([&](Heap* o) {
    others_live |=
        heap_is_thread(o) && o->state.load(std::memory_order_acquire) == HeapState::kLive;
  });
  // The last allocating thread is leaving: a purge thread started now, or
  // left running, could be all that keeps the process from ending.
  if (others_live)
    purge_notify();
  else
    purge_stop();
}

std::atomic<int> g_process_state{0};  // 0 none, 1 initialising, 2 ready

}  // namespace

void heap_lock_all() {
  g_pool_lock.lock();
  heap_for_each([](Heap* h) {
    h->owner_lock.lock();
    h->lock.lock();
  });
  g_thread_segments.lock.lock();  // last: taken inside heap locks
}

void heap_unlock_all(bool in_child) {
  if (in_child)
    g_thread_segments.lock.reset();
  else
    g_thread_segments.lock.unlock();
  heap_for_each([&](Heap* h) {
    if (in_child) {
      h->lock.reset();
      h->owner_lock.reset();
    } else {
      h->lock.unlock();
      h->owner_lock.unlock();
    }
  });
  if (in_child)
    g_pool_lock.reset();
  else
    g_pool_lock.unlock();
}

void heap_abandon_others_in_child() {
  Heap* self = heap_current();
  // A collector stopped by the fork may hold claims, and its lock; none runs
  // in the child.
  g_runs_collector.reset();
  heap_for_each([self](Heap* h) {
    h->runs_claimed.store(false, std::memory_order_relaxed);
    h->owner_claimed.store(false, std::memory_order_relaxed);
    if (h != self && heap_is_thread(h) &&
        h->state.load(std::memory_order_relaxed) == HeapState::kLive) {
      abandon_in_child(h);
    }
  });
}

Heap* heap_registry_head() { return g_registry.load(std::memory_order_acquire); }

void heap_process_init() {
  int expected = 0;
  if (!g_process_state.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) {
    while (g_process_state.load(std::memory_order_acquire) != 2) os::yield();
    return;
  }
#if defined(_WIN32)
  // The TLS slot must exist before the first heap_set_current; until then
  // heap_current() reads "no slot" and returns the empty heap.
  os::tls_heap_init();
#endif
  options_init();
  os::thread_exit_register(thread_exit);
  register_fork_handlers();
  g_process_state.store(2, std::memory_order_release);
}

Heap* heap_thread_init() {
  if (g_process_state.load(std::memory_order_acquire) != 2) heap_process_init();
  Heap* h = nullptr;
  {
    LockGuard guard(g_pool_lock);
    if (g_abandoned) {
      h = g_abandoned;
      g_abandoned = h->pool_next;
    }
  }
  if (h) {
    h->state.store(HeapState::kLive, std::memory_order_relaxed);
  } else {
    h = heap_new(HeapKind::kThread);
    if (!h) return nullptr;
  }
  // Set before arming the exit hook: arming may allocate and must find the heap.
  heap_set_current(h);
  os::thread_exit_arm(h);
  return h;
}

void* heap_alloc(Heap* h, size_t size) {
  if constexpr (kSecure) {
    if (size > kMaxRequest) return nullptr;
    size += kCanarySize;
  }
  if (size <= kMediumMax) return alloc_class(h, size_class_of(size));
  if (size <= kLargeMax) return alloc_large(h, size, kMinAlign);
  if (size > kMaxRequest) return nullptr;
  return heap_alloc_huge(h, size, kMinAlign, false);
}

void* heap_alloc_aligned(Heap* h, size_t alignment, size_t size) {
  if (alignment <= kMinAlign) return heap_alloc(h, size);
  if (size > kMaxRequest || alignment > kMaxRequest) return nullptr;
  if constexpr (kSecure) size += kCanarySize;
  unsigned c = aligned_class(size, alignment);
  if (c < kClassCount) return alloc_class(h, c);
  if (size <= kLargeMax) return alloc_large(h, size, alignment);
  return heap_alloc_huge(h, size, alignment, false);
}

void* heap_malloc_slow(size_t size) {
  Heap* h = heap_current();
  if (heap_is_placeholder(h)) {
    h = heap_thread_init();
    if (!h) return nullptr;
  }
  return heap_alloc(h, size);
}

bool heap_grow_span(void* p, size_t size) {
  if constexpr (kSecure) return false;  // a span may end at its segment's guard page
  uintptr_t u = uintptr_t(p);
  if (map_kind(u) != kMapSegment) return false;
  Slab* s = slab_at(segment_of(u), u);
  Heap* owner = s->heap;
  if (s->kind != SliceKind::kLarge || s->start != p || (s->flags & kSlabHasAligned) || !owner)
    return false;
  unsigned first = slice_index(s);
  auto count = unsigned(slices_for(size));
  while (slices_bytes(first, count) < size) ++count;
  Heap* home = slice_home(owner);
  LockGuard guard(home->lock);
  if (!segment_extend_span(home, s, count)) return false;
  slab_span_resized(s);
  return true;
}

namespace {
// This system has no process barrier: no collector takes runs, and nothing
// needs waking for them (found by the first collector that tries).
std::atomic<bool> g_no_process_barrier{false};

// A remote free that found no run of its slab in its slot: push it now, or
// start a run there. Out of line and closing the section itself (as does
// flush_run_and_leave), so heap_free_remote stays a leaf that saves nothing.
__attribute__((noinline)) void start_run(Heap* h, Slab* s, Block* b, uintptr_t tag, unsigned i,
                                         uint32_t e) {
  bool held = heap_is_thread(s->heap) && s->block_size <= kRemoteRunMaxBlock;
  // A run starts at the second free in a row that the slot sees for a slab
  // that may hold one: frees scattered over many slabs (no run would grow)
  // go straight on, and a slab freed into again takes the slot over from a
  // run gone stale.
  if (!held || h->run_seen[i] != s) {
    if (held) h->run_seen[i] = s;
    runs_leave(h, e);
    return free_remote(s, b, tag);
  }
  RemoteRun& r = h->runs[i];
  if (r.slab) flush_run(h, i);
  b->next = nullptr;
  b->tag = tag;
  r = {s, b, b, 1};
  uint64_t pending = h->runs_pending.load(std::memory_order_relaxed);
  h->runs_pending.store(pending | uint64_t{1} << i, std::memory_order_relaxed);
  runs_leave(h, e);
  // The first run held: the purge thread may have to come and take it
  // (outside the section: starting that thread allocates).
  if (pending == 0 && !g_no_process_barrier.load(std::memory_order_relaxed)) purge_notify();
}

__attribute__((noinline)) void flush_run_and_leave(Heap* h, unsigned i, uint32_t e) {
  flush_run(h, i);
  runs_leave(h, e);
}

// No section: a placeholder heap, a collector at work, or a push's slow
// path. A thread that only frees (a consumer) gets a heap for its runs at
// its first remote free; one that has left pushes each block at once.
__attribute__((noinline)) void free_unheld(Heap* h, Slab* s, Block* b, uintptr_t tag) {
  if (h == &g_empty_heap && (h = heap_thread_init())) return heap_free_remote(h, s, b, tag);
  free_remote(s, b, tag);
}

}  // namespace

// Hot (cross-thread free): the block joins the run this thread holds for its
// slab, no atomic read-modify-write. A push's compare-and-swap waits for the
// stores that link the block, and they miss (its line was last written by
// the thread that used it); held in a run, they complete in the background,
// and the run goes with one CAS when full or when this thread next takes its
// own slow path (most runs in a two-way exchange are short: the win is the
// CAS not waiting). Runs are bounded, pushed when this thread leaves, and
// taken by the purge thread once it has stopped freeing. First-class heaps'
// slabs take no runs (such a heap may be destroyed whole while a run is
// held), nor do blocks over kRemoteRunMaxBlock; a slab in a run is never
// either (its blocks there keep it from being reused).
__attribute__((noinline)) void heap_free_remote(Heap* h, Slab* s, Block* b, uintptr_t tag) {
  if constexpr (kSecure) return free_remote(s, b, tag);
  uint32_t e;
  if (__builtin_expect(!runs_enter(h, e), 0)) return free_unheld(h, s, b, tag);
  // Descriptors are 128 bytes apart: within a segment each slab has its own slot.
  unsigned i = unsigned(uintptr_t(s) >> 7) % kRemoteRunSlots;
  RemoteRun& r = h->runs[i];
  if (__builtin_expect(r.slab != s, 0)) return start_run(h, s, b, tag, i, e);
  b->next = r.head;
  b->tag = tag;
  r.head = b;
  if (__builtin_expect(++r.count == kRemoteRunLength, 0)) return flush_run_and_leave(h, i, e);
  runs_leave(h, e);
}

void heap_offset_growth(Heap* h, size_t bytes) {
  if (bytes == 0) return;  // nothing grew (a cache hit): no lock to take
  Heap* home = slice_home(h);
  LockGuard guard(home->lock);
  segment_decommit_idle(home, bytes);
}

// Off the free fast path: kept out of line so free stays a leaf without spills.
__attribute__((noinline)) void heap_slab_empty(Heap* h, Slab* s) {
  if (s->size_class >= kSmallClassCount) return medium_slab_empty(h, s);
  SlabQueue& q = h->queues[s->size_class];
  // Keep one slab per class: no thrash at a boundary. No section for the
  // test (the common outcome): a collector changes neither end of a queue.
  if (q.head == s && q.tail == s) return;
  release_empty(h, s);
}

namespace {
// The live slab or span holding segment address u, or nullptr.
Slab* live_slab_of(uintptr_t u) {
  Slab* s = slab_head(slab_at(segment_of(u), u));
  return s->kind == SliceKind::kSlab || s->kind == SliceKind::kLarge ? s : nullptr;
}

// Offset of the block of s that p designates: its start, or (in slabs that
// hand out aligned interior pointers) any address inside it; -1 otherwise.
// *interior tells the two failures apart.
int64_t block_offset(const Slab* s, uintptr_t u, uint64_t* off_out, bool* interior) {
  uint64_t off = u - uintptr_t(s->start);
  *interior = false;
  if (off >= slab_carved(s)) return -1;
  uint64_t block_off = uint64_t(slab_block_index(s, off)) * s->block_size;
  if (block_off != off && !(s->flags & kSlabHasAligned)) {
    *interior = true;
    return -1;
  }
  *off_out = off;
  return int64_t(block_off);
}
}  // namespace

void heap_free_slow(void* p) {
  uintptr_t u = uintptr_t(p);
  unsigned kind = map_kind(u);
  if (kind == kMapHuge || kind == kMapHugeTail) return huge_free(u);
  if (kind != kMapSegment) {
    if (p) report_error(ErrorKind::kInvalidFree, p, 0);
    return;
  }
  Slab* s = slab_head(slab_at(segment_of(u), u));
  if (!live_slab_of(u)) {
    // A retired span's head descriptor still holds its start and size.
    bool was_span =
        s->kind == SliceKind::kFree && s->size_class == kClassCount && u == uintptr_t(s->start);
    report_error(was_span ? ErrorKind::kDoubleFree : ErrorKind::kInvalidFree, p,
                 was_span ? s->block_size : 0);
    return;
  }
  uint64_t off;
  bool interior;
  int64_t block_off = block_offset(s, u, &off, &interior);
  if (block_off < 0) {
    report_error(interior ? ErrorKind::kInteriorFree : ErrorKind::kInvalidFree, p, s->block_size);
    return;
  }
  auto* b = reinterpret_cast<Block*>(s->start + block_off);
  Heap* h = heap_current();
  bool local = s->heap == h && s->kind == SliceKind::kSlab;
  if constexpr (kSecure) {
    if (s->kind == SliceKind::kLarge)
      secure::on_free_large(s, b);
    else
      secure::on_free(s, b, local);
  } else if (b->tag == block_tag(s, b)) {
    report_error(ErrorKind::kDoubleFree, p, s->block_size);
    return;
  }
  if (local) {
    OwnerSection section(h);
    return free_local(h, s, b);
  }
  free_remote(s, b, block_tag(s, b));
}

size_t heap_usable_size(const void* p) {
  uintptr_t u = uintptr_t(p);
  unsigned kind = map_kind(u);
  if (kind == kMapHuge || kind == kMapHugeTail) return huge_usable_size(u);
  if (kind != kMapSegment) return 0;
  Slab* s = live_slab_of(u);
  if (!s) return 0;
  uint64_t off;
  bool interior;
  int64_t block_off = block_offset(s, u, &off, &interior);
  if (block_off < 0) return 0;
  if constexpr (kSecure) return secure::usable(s, block_off, off);
  return s->block_size - (off - block_off);
}

Heap* heap_of_block(const void* p) {
  uintptr_t u = uintptr_t(p);
  unsigned kind = map_kind(u);
  if (kind == kMapHuge || kind == kMapHugeTail) return huge_owner(u);
  if (kind != kMapSegment) return nullptr;
  Slab* s = live_slab_of(u);
  return s ? s->heap : nullptr;
}

// ---- first-class heaps ----

Heap* heap_create(size_t initial_reserve, size_t max_bytes) {
  if (g_process_state.load(std::memory_order_acquire) != 2) heap_process_init();
  Heap* h = heap_new(HeapKind::kFirstClass);
  if (!h) return nullptr;
  h->max_bytes = max_bytes;
  if (initial_reserve) {
    bool ok;
    {
      LockGuard guard(h->lock);
      ok = segment_reserve_ahead(h, initial_reserve);
      if (!ok) segment_release_all(h);
    }
    if (!ok) {
      park_spare(h);
      return nullptr;
    }
  }
  return h;
}

namespace {
void forget_slabs(Heap* h) {
  for (unsigned c = 0; c < kClassCount; ++c) {
    h->queues[c] = {};
    direct_update(h, c);
  }
  for (Slab*& r : h->ready) r = nullptr;
  for (auto& w : h->ready_classes) w.store(0, std::memory_order_relaxed);
}
}  // namespace

void heap_destroy(Heap* h) {
  {
    LockGuard owner(h->owner_lock);
    LockGuard guard(h->lock);
    forget_slabs(h);
    huge_release_heap(h);
    segment_release_all(h);
  }
  park_spare(h);
}

void heap_reset(Heap* h) {
  {
    LockGuard owner(h->owner_lock);
    LockGuard guard(h->lock);
    forget_slabs(h);
    huge_release_heap(h);
    segment_reset_all(h, os::now_ms());
  }
  purge_notify();  // may start the purge thread, which allocates: no lock held
}

// ---- memory return ----

namespace {

// The last look at other owners' queues (under g_runs_collector).
uint64_t g_slabs_looked_ms = 0;

// A collector's look at one of a heap's epochs: true when it is even (no
// section open) and, unless forced, the one the last look saw; records it
// for the next look and for still_claimed_epoch.
bool quiet_epoch(std::atomic<uint32_t>& epoch, std::atomic<uint32_t>& seen, bool force) {
  uint32_t e = epoch.load(std::memory_order_acquire);
  uint32_t last = seen.exchange(e, std::memory_order_relaxed);
  return !(e & 1) && (force || e == last);
}
// After the barrier: still the epoch of the claim, so no section was open at
// the barrier, and any opened since sees the claim.
bool still_claimed_epoch(const std::atomic<uint32_t>& epoch, const std::atomic<uint32_t>& seen) {
  return epoch.load(std::memory_order_acquire) == seen.load(std::memory_order_relaxed);
}

// Under h's claim, with no owner section open: take out of h's queues every
// slab whose blocks are all free and came back from other threads, linked
// through `next` onto *out. Not a queue's head or tail: the fast paths read
// those (malloc pops from the head; heap_slab_empty tests both ends).
void take_free_slabs(Heap* h, Slab** out) {
  for (unsigned c = 0; c < kClassCount; ++c) {
    SlabQueue& q = h->queues[c];
    for (Slab *s = q.head ? q.head->next : nullptr, *next; s && s != q.tail; s = next) {
      next = s->next;
      // `used` first: it only falls while the owner stays out (it allocates
      // from heads only), the remote count only rises, so equal counts read
      // in this order mean no block was live at the second read.
      uint32_t used = __atomic_load_n(&s->used, __ATOMIC_ACQUIRE);
      if (used == 0 || remote_count(s->remote.load(std::memory_order_acquire)) != used) continue;
      queue_remove(h, s);  // neither end: only its neighbours' links change
      s->next = *out;
      *out = s;
    }
  }
}

// Takes the runs of every thread heap whose owner has not touched them since
// the last look (force: of every thread heap not inside a section) and
// pushes them. Then, once a purge delay (force: now), the same for the
// queues of other threads: the slabs that their blocks all came back to go
// back to their segments. True if runs are left to look at again.
bool collect_idle(bool force, uint64_t now) {
  if (g_no_process_barrier.load(std::memory_order_relaxed)) return false;
  if (!g_runs_collector.try_lock()) return true;
  // Queues: at most once a purge delay (heap_purge_all asks for two looks
  // after any work, so an owner that went idle meanwhile is seen idle twice).
  bool slabs =
      !kSecure && (force || now - g_slabs_looked_ms >= uint64_t(option(GR_OPTION_PURGE_DELAY)));
  if (slabs) {
    g_slabs_looked_ms = now;
    g_slab_looks_since_busy.fetch_add(1, std::memory_order_relaxed);
  }
  Heap* self = heap_current();
  bool pending = false, claimed = false;
  heap_for_each([&](Heap* h) {
    if (!heap_is_thread(h)) return;
    if (h->runs_pending.load(std::memory_order_relaxed) != 0) {
      if (quiet_epoch(h->runs_epoch, h->runs_seen_epoch, force)) {
        h->runs_claimed.store(true, std::memory_order_relaxed);
        claimed = true;
      } else {
        pending = true;  // freeing now, or since the last look
      }
    }
    // Never our own heap: a section of ours would wait for us.
    if (h == self || h->state.load(std::memory_order_acquire) != HeapState::kLive) return;
    if (slabs && quiet_epoch(h->owner_epoch, h->owner_seen_epoch, force)) {
      h->owner_claimed.store(true, std::memory_order_relaxed);
      claimed = true;
    }
  });
  if (!claimed) {
    g_runs_collector.unlock();
    return pending;
  }
  bool ordered = os::process_barrier();
  if (!ordered) g_no_process_barrier.store(true, std::memory_order_relaxed);
  Slab* freed = nullptr;
  // Every heap, whatever its kind reads now: a claim left behind would stop
  // its owner's next section for good.
  heap_for_each([&](Heap* h) {
    bool thread = heap_is_thread(h);
    // A section opened since the barrier waits for the queues' claim, and
    // leaves the runs alone while theirs is set.
    if (h->owner_claimed.load(std::memory_order_relaxed)) {
      if (thread && ordered && still_claimed_epoch(h->owner_epoch, h->owner_seen_epoch))
        take_free_slabs(h, &freed);
      h->owner_claimed.store(false, std::memory_order_release);
    }
    if (!h->runs_claimed.load(std::memory_order_relaxed)) return;
    RemoteRun taken[kRemoteRunSlots];
    unsigned n = 0;
    if (ordered && still_claimed_epoch(h->runs_epoch, h->runs_seen_epoch)) {
      uint64_t m = h->runs_pending.load(std::memory_order_relaxed);
      for (uint64_t k = m; k; k &= k - 1) taken[n++] = h->runs[__builtin_ctzll(k)];
      // The bits go first: a fork child that inherits a slot whose bit is
      // clear but whose slab is set pushes it at most once (this copy is
      // not in the child).
      h->runs_pending.store(0, std::memory_order_relaxed);
      for (uint64_t k = m; k; k &= k - 1) h->runs[__builtin_ctzll(k)].slab = nullptr;
    } else if (ordered) {
      pending = true;
    }
    h->runs_claimed.store(false, std::memory_order_release);
    for (unsigned k = 0; k < n; ++k)
      push_remote(taken[k].slab, taken[k].head, taken[k].tail, taken[k].count);
  });
  g_runs_collector.unlock();
  // Out of every queue, and no block in them is live: nobody else can reach them.
  for (Slab *s = freed, *next; s; s = next) {
    next = s->next;
    Heap* h = s->heap;
    LockGuard guard(h->lock);
    return_slices(h, s, now);
  }
  return pending;
}
}  // namespace

bool heap_purge_all(bool force) {
  uint64_t now = os::now_ms();
  bool pending = collect_idle(force, now);
  pending |= huge_purge(now, force);
  auto purge = [&](Heap* h) {
    if (h->state.load(std::memory_order_acquire) == HeapState::kDestroyed) return;
    if (force) {
      h->lock.lock();
    } else if (!h->lock.try_lock()) {
      pending = true;
      return;
    }
    pending |= segment_purge(h, now, force);
    h->lock.unlock();
  };
  heap_for_each(purge);
  purge(&g_thread_segments);
  // Two more looks at other owners' queues after the last pass with work
  // (none where nothing would look: no barrier, or purging is off).
  if (pending)
    g_slab_looks_since_busy.store(0, std::memory_order_relaxed);
  else if (!kSecure && !g_no_process_barrier.load(std::memory_order_relaxed) &&
           option(GR_OPTION_PURGE_DELAY) >= 0 &&
           g_slab_looks_since_busy.load(std::memory_order_relaxed) < 2)
    pending = true;
  return pending;
}

void heap_collect_current() {
  Heap* h = heap_current();
  if (heap_is_placeholder(h)) return;
  flush_runs_now(h);
  uint64_t now = os::now_ms();
  OwnerSection section(h);
  // Ready slabs stay detached: none is empty (the last free retires a
  // detached slab), and taken back they would wait for this thread.
  for (unsigned c = 0; c < kClassCount; ++c) {
    for (Slab *s = h->queues[c].head, *next; s; s = next) {
      next = s->next;
      slab_collect(s);
      if (s->used == 0) {
        queue_remove(h, s);
        LockGuard guard(h->lock);
        return_slices(h, s, now);
      }
    }
  }
}

}  // namespace granule
