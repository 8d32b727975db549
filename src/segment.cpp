#include "segment.h"

#include <algorithm>
#include <cstring>

#include "huge.h"
#include "meta.h"
#include "options.h"
#include "os/os.h"
#include "report.h"
#include "stats.h"

namespace granule {

constinit uint8_t g_segment_map[kMapEntries];

void map_set(uintptr_t start, size_t size, MapKind first, MapKind rest) {
  uintptr_t i = start >> kSegmentShift, end = (start + size + kSegmentMask) >> kSegmentShift;
  if (end > kMapEntries) end = kMapEntries;
  // Release: a thread that sees the entry also sees the initialised header.
  for (uintptr_t j = i + 1; j < end; ++j)
    __atomic_store_n(&g_segment_map[j], uint8_t(rest), __ATOMIC_RELEASE);
  if (i < kMapEntries) __atomic_store_n(&g_segment_map[i], uint8_t(first), __ATOMIC_RELEASE);
}

void map_clear(uintptr_t start, size_t size) {
  uintptr_t i = start >> kSegmentShift, end = (start + size + kSegmentMask) >> kSegmentShift;
  if (end > kMapEntries) end = kMapEntries;
  for (; i < end; ++i) __atomic_store_n(&g_segment_map[i], uint8_t(kMapNone), __ATOMIC_RELEASE);
}

namespace {

constexpr uint64_t kAllSlices = ~uint64_t{0};

// Without -mpopcnt (the x86-64 baseline) __builtin_popcountll is a call into
// libgcc's byte table; the walks over segments count slices per segment.
inline unsigned popcount(uint64_t x) {
#if defined(__POPCNT__) || !defined(__x86_64__)
  return unsigned(__builtin_popcountll(x));
#else
  x -= (x >> 1) & 0x5555555555555555ull;
  x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
  x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0full;
  return unsigned((x * 0x0101010101010101ull) >> 56);
#endif
}

// h->segments holds the segments with a free slice, h->full_segments the
// rest: a heap grown to gigabytes took a walk over all its segments (three
// with the idle decommit) for every slab before. A segment moves when its
// last free slice is taken, and back to the front when one is returned.
// A node is on two kinds of doubly linked list: its heap's segment list and
// the bins (bin_file); each names its pair of link fields.
struct Links {
  SegmentNode* SegmentNode::*next;
  SegmentNode* SegmentNode::*prev;
};
constexpr Links kListLinks{&SegmentNode::next, &SegmentNode::prev};

void unlink(SegmentNode** head, SegmentNode* n, Links l) {
  if (n->*l.prev)
    (n->*l.prev)->*l.next = n->*l.next;
  else
    *head = n->*l.next;
  if (n->*l.next) (n->*l.next)->*l.prev = n->*l.prev;
}

void link_front(SegmentNode** head, SegmentNode* n, Links l) {
  n->*l.prev = nullptr;
  n->*l.next = *head;
  if (*head) (*head)->*l.prev = n;
  *head = n;
}

void list_remove(SegmentNode** head, SegmentNode* n) { unlink(head, n, kListLinks); }
void list_push(SegmentNode** head, SegmentNode* n) { link_front(head, n, kListLinks); }

// A segment whose last free slice was just taken (full), or that just got
// one back while full (!full): to the front of its new list.
void list_move(Heap* h, Segment* seg, bool full) {
  list_remove(full ? &h->segments : &h->full_segments, seg->node);
  list_push(full ? &h->full_segments : &h->segments, seg->node);
  if (full)
    ++h->full_segment_count;
  else
    --h->full_segment_count;
}

SegmentNode** list_of(Heap* h, const Segment* seg) {
  return seg->node->free_mask ? &h->segments : &h->full_segments;
}

// Nodes of released segments wait in their heap for its next segment; new
// ones come from the metadata area, next to the heap's others.
SegmentNode* node_take(Heap* h) {
  SegmentNode* n = h->spare_nodes;
  if (n)
    h->spare_nodes = n->next;
  else
    n = static_cast<SegmentNode*>(meta_alloc(sizeof(SegmentNode)));
  return n;
}

void node_give_back(Heap* h, SegmentNode* n) {
  *n = SegmentNode{};
  n->next = h->spare_nodes;
  h->spare_nodes = n;
}

// Length of the longest run of set bits in `free`: double while runs twice
// as long exist, then halve the step (run_starts's rule, m & m >> s for
// s <= k): at most a dozen steps, on every change of a segment's free slices.
unsigned longest_run(uint64_t free) {
  if (free == kAllSlices) return kSlicesPerSegment;
  if (!free) return 0;
  uint64_t m = free;  // starts of runs of at least k
  unsigned k = 1;
  for (uint64_t next; (next = m & (m >> k)); k *= 2) m = next;
  for (unsigned step = k / 2; step; step /= 2) {
    if (uint64_t next = m & (m >> step)) {
      m = next;
      k += step;
    }
  }
  return k;
}

// Segments are filed by their longest free run and by their longest free
// run that is committed whole, so a search goes straight to the segments
// that can serve it, shortest fitting run first, and a request no segment
// can serve makes a new one without a walk. Searches that walked the list
// of segments looked at a bounded number of them (walking a thousand nodes
// for each span cost a cache miss per node) and so missed resident runs
// further on: 3 000 live spans of 128 KiB-2 MiB replaced at random spent
// 60 % of their time in segment_take_slices, and refaulted pages freed a
// moment ago in segments out of reach.
enum BinKind : unsigned { kFreeBins = 0, kResidentBins = 1 };
constexpr Links kBinLinks[2] = {{&SegmentNode::free_bin_next, &SegmentNode::free_bin_prev},
                                {&SegmentNode::resident_bin_next, &SegmentNode::resident_bin_prev}};

void bin_remove(Heap* h, SegmentNode* n, unsigned kind) {
  RunBins& r = h->run_bins[kind];
  unsigned b = n->longest[kind] - 1u;
  unlink(&r.bins[b], n, kBinLinks[kind]);
  if (!r.bins[b]) r.nonempty &= ~(uint64_t{1} << b);
  n->longest[kind] = 0;
}

void bin_file(Heap* h, SegmentNode* n, unsigned kind, unsigned longest) {
  if (longest == n->longest[kind]) return;
  if (n->longest[kind]) bin_remove(h, n, kind);
  if (!longest) return;
  RunBins& r = h->run_bins[kind];
  unsigned b = longest - 1;
  n->longest[kind] = uint8_t(longest);
  link_front(&r.bins[b], n, kBinLinks[kind]);
  r.nonempty |= uint64_t{1} << b;
}

// n's free or committed slices changed: file it anew.
void bin_refile(Heap* h, SegmentNode* n) {
  bin_file(h, n, kFreeBins, longest_run(n->free_mask));
  bin_file(h, n, kResidentBins, longest_run(n->free_mask & n->committed_mask));
}

void bin_unfile(Heap* h, SegmentNode* n) {
  if (n->longest[kFreeBins]) bin_remove(h, n, kFreeBins);
  if (n->longest[kResidentBins]) bin_remove(h, n, kResidentBins);
}

// Bins holding segments with a run of `count` slices, bit 0 for count.
inline uint64_t bins_from(const Heap* h, unsigned kind, unsigned count) {
  return h->run_bins[kind].nonempty >> (count - 1);
}

// Every segment that may hold a run of `count` slices of `kind`, shortest
// longest run first, until fn returns true or `left` segments were seen.
template <class Fn>
void for_each_candidate(Heap* h, unsigned kind, unsigned count, unsigned left, Fn fn) {
  for (uint64_t bins = bins_from(h, kind, count); bins; bins &= bins - 1) {
    SegmentNode* n = h->run_bins[kind].bins[__builtin_ctzll(bins) + count - 1];
    for (; n; n = n->*kBinLinks[kind].next) {
      if (fn(n) || --left == 0) return;
    }
  }
}

inline uint64_t run_bits(unsigned first, unsigned count) {
  return (count == 64 ? kAllSlices : ((uint64_t{1} << count) - 1)) << first;
}

// Commit or decommit every maximal run of slices set in `bits`.
template <class Fn>
void for_each_run(uint64_t bits, Fn fn) {
  while (bits) {
    unsigned first = unsigned(__builtin_ctzll(bits));
    uint64_t shifted = bits >> first;
    unsigned count = shifted == kAllSlices ? 64 : unsigned(__builtin_ctzll(~shifted));
    fn(first, count);
    bits &= ~run_bits(first, count);
  }
}

bool commit_slices(Heap* h, Segment* seg, uint64_t bits) {
  bool ok = true;
  for_each_run(bits, [&](unsigned first, unsigned count) {
    if (!ok) return;
    size_t bytes = slices_bytes(first, count);
    if (!os::commit(slice_start(seg, first), bytes)) {
      ok = false;
      return;
    }
    bump(g_stats.os_commits);
    g_stats.committed.add(bytes);
    seg->node->committed_mask |= run_bits(first, count);
  });
  if (!ok) bin_refile(h, seg->node);  // else the caller takes the run and refiles
  return ok;
}

// Free slices wait before they are decommitted: a quarter of the purge
// delay at first, twice as long per level, up to eight delays. A heap climbs
// a level when more than half as many slices as its wait purged come back
// past that wait but before the longest one (each one a page fault per page
// touched, after a TLB shootdown for the purge): a program that frees and
// regrows in rounds, or churns spans while it grows, keeps its memory
// resident between them (threads exchanging spans of up to 800 KiB in
// rounds of a few hundred ms: 1.2 to 1.8 times faster at 4 and 8 threads,
// same peak). It steps down when its wait spares little: slices taken back
// resident in the wait's last half (which a shorter wait would have purged)
// plus twice those taken back after it stay under half of what it purges.
// A program that frees memory and then grows elsewhere (an interpreter's
// own arenas, another library's mappings) doesn't carry it at its peak
// (segment_decommit_idle), and a heap that took no slice for a whole delay
// is idle: its slices wait only the shortest wait, whatever its level.
constexpr uint64_t kShortWaitDivisor = 4;
constexpr uint8_t kPurgeLevels = 6;       // waits of 1/4, 1/2, 1, 2, 4 and 8 delays
constexpr uint32_t kLevelEvidence = 16;   // slices purged and taken back, a MiB
constexpr uint64_t kFeedbackDelays = 10;  // the counts halve this often

// The wait of a level.
uint64_t level_wait(uint64_t delay, unsigned level) { return (delay / kShortWaitDivisor) << level; }

uint64_t slice_wait(const Heap* h, uint64_t delay) { return level_wait(delay, h->purge_level); }

// A new level is judged on fresh counts, a whole period from now.
void set_purge_level(Heap* h, unsigned level, uint64_t now) {
  h->purge_level = uint8_t(level);
  h->purged_slices = h->retaken_slices = h->spared_slices = 0;
  h->feedback_since = now;
}

// `bits` leave the free slices: count those the wait purged that a longer
// one would have kept resident, and those it kept that a shorter one would
// have purged.
void note_taken(Heap* h, Segment* seg, uint64_t bits) {
  ++h->slice_takes;
  uint64_t waiting = bits & (seg->node->purge_mask | seg->purged_mask);
  uint64_t purged = bits & seg->purged_mask;
  uint64_t offset = bits & seg->offset_mask;
  seg->purged_mask &= ~bits;
  seg->offset_mask &= ~bits;
  long option_delay = option(GR_OPTION_PURGE_DELAY);
  if ((!waiting && !offset) || option_delay <= 0) return;  // at once or never: nothing to learn
  uint64_t now = os::now_ms(), delay = uint64_t(option_delay);
  uint64_t wait = slice_wait(h, delay);
  uint64_t longest = level_wait(delay, kPurgeLevels - 1);
  for (; waiting; waiting &= waiting - 1) {
    unsigned i = unsigned(__builtin_ctzll(waiting));
    uint64_t age = now - seg->slabs[i].free_since;
    if (age >= wait) {
      // Purged, or due at the next pass.
      if (age < longest) ++h->retaken_slices;
    } else if (h->purge_level > 0 && age >= wait / 2 && !((purged >> i) & 1)) {
      ++h->spared_slices;
    }
  }
  if (h->retaken_slices >= kLevelEvidence && h->retaken_slices * 2 > h->purged_slices &&
      h->purge_level + 1 < kPurgeLevels) {
    set_purge_level(h, h->purge_level + 1u, now);
  }
  for (; offset; offset &= offset - 1)
    if (now - seg->slabs[__builtin_ctzll(offset)].free_since < std::max(delay, wait))
      ++h->offset_retaken;
}

void decommit_slices(Heap* h, Segment* seg, uint64_t bits) {
  for_each_run(bits, [&](unsigned first, unsigned count) {
    size_t bytes = slices_bytes(first, count);
    os::decommit(slice_start(seg, first), bytes);
    bump(g_stats.os_decommits);
    bump(g_stats.purges);
    g_stats.committed.sub(bytes);
    seg->node->committed_mask &= ~run_bits(first, count);
  });
  bin_refile(h, seg->node);
}

Segment* segment_create(Heap* h) {
  SegmentNode* node = node_take(h);
  if (!node) return nullptr;
  // Memory freed as huge blocks and still resident comes first: no new
  // pages, no faults. Its slices count as committed and are purged after
  // the delay unless used.
  void* p = huge_cache_take_segment();
  bool resident = p != nullptr;
  if (resident) {
    std::memset(p, 0, kSegmentHeaderSize);
  } else {
    p = os::reserve(kSegmentSize, kSegmentSize);
    if (p) {
      bump(g_stats.os_reserves);
      if (!os::commit(p, kSegmentHeaderSize)) {
        os::release(p, kSegmentSize);
        bump(g_stats.os_releases);
        p = nullptr;
      }
    }
    if (!p) {
      node_give_back(h, node);
      return nullptr;
    }
    bump(g_stats.os_commits);
  }
  auto* seg = static_cast<Segment*>(p);
  // Zero memory: every descriptor reads as a free slice (free since 0, so a
  // resident slice nobody takes is purged at the next pass).
  seg->cookie = kSegmentCookie ^ uintptr_t(seg);
  seg->heap = h;
  seg->node = node;
  node->seg = seg;
  node->free_mask = kAllSlices;
  node->committed_mask = resident ? kAllSlices : 0;
  node->purge_mask = resident ? kAllSlices : 0;
  node->purge_since = 0;
  if (resident) {
    g_stats.committed.add(kSegmentSize - kSegmentHeaderSize);
    for (Slab& s : seg->slabs) s.dirty = kSliceSize;  // whatever the huge block touched
  }
  seg->empty_since = 0;
  node->retired_spans = 0;
  if constexpr (kSecure) {
    os::protect_none(reinterpret_cast<char*>(seg) + kSegmentHeaderSize - os::info().page_size,
                     os::info().page_size);
    // One guard per segment end (not per span) keeps the mapping count at
    // four per segment, far from vm.max_map_count.
    os::protect_none(reinterpret_cast<char*>(seg) + kSegmentSize - kGuardSize, kGuardSize);
  }
  list_push(&h->segments, node);
  bin_refile(h, node);
  g_stats.reserved.add(kSegmentSize);
  g_stats.committed.add(kSegmentHeaderSize);
  g_stats.segments.add(1);
  map_set(uintptr_t(seg), kSegmentSize, kMapSegment, kMapSegment);
  return seg;
}

void segment_destroy(Heap* h, Segment* seg) {
  SegmentNode* node = seg->node;
  if (!node->free_mask) --h->full_segment_count;
  list_remove(list_of(h, seg), node);
  bin_unfile(h, node);
  map_clear(uintptr_t(seg), kSegmentSize);
  size_t committed = kSegmentHeaderSize;
  for_each_run(node->committed_mask,
               [&](unsigned first, unsigned count) { committed += slices_bytes(first, count); });
  node_give_back(h, node);
  g_stats.committed.sub(committed);
  g_stats.reserved.sub(kSegmentSize);
  g_stats.segments.sub(1);
  os::release(seg, kSegmentSize);
  bump(g_stats.os_releases);
}

// Every start of `count` consecutive set bits in `free`, as a mask. The
// starts of runs of k bits, m, give those of 2k as m & m >> k, and of k + r
// (r <= k) as m & m >> r: log2(count) steps where one per bit took a 16-slice
// span 15 on every segment a search looked at. Shifts bring in zeros, so no
// run wraps past slice 63.
uint64_t run_starts(uint64_t free, unsigned count) {
  uint64_t m = free;
  unsigned k = 1;
  for (; 2 * k <= count && m; k *= 2) m &= m >> k;
  if (k < count) m &= m >> (count - k);
  return m;
}

// Lowest start of `count` consecutive set bits in `free`, or -1.
int find_run(uint64_t free, unsigned count) {
  uint64_t m = run_starts(free, count);
  return m ? __builtin_ctzll(m) : -1;
}

// Walks under the segments' lock look at this many segments with free
// slices at most (512 MiB of them; newest first, and those a slice came
// back to after they were full): spans freed at random across gigabytes
// leave every segment a few holes, and walking them all for each take cost
// 50 us a block (20 000 live blocks of 64 to 512 KiB). The idle decommit
// and closest_slice walk this far; searches for runs take candidates from
// the bins, and read at most this many of them.
constexpr unsigned kSegmentsSearched = 128;

// The free run of `count` slices that is committed whole in the segment with
// the shortest such longest run (best fit keeps long resident runs for long
// requests), one free of retired span heads first; with `retired`, one
// holding such a head if no other turns up. -1 if none.
int resident_run(Heap* h, unsigned count, bool avoid_slice0, bool retired, Segment** found) {
  int best = -1;
  for_each_candidate(h, kResidentBins, count, kSegmentsSearched, [&](SegmentNode* n) {
    uint64_t free = n->free_mask & n->committed_mask;
    if (avoid_slice0) free &= ~uint64_t{1};
    int f = find_run(free & ~n->retired_spans, count);
    if (f < 0 && (!retired || best >= 0 || (f = find_run(free, count)) < 0)) return false;
    best = f, *found = n->seg;
    // One holding a retired head: keep looking for one without.
    return !(n->retired_spans & run_bits(unsigned(f), count));
  });
  return best;
}

// The free run of `count` slices with the fewest decommitted ones (each is
// a page fault per page to come), or -1. Free runs that are long but only
// partly resident are what fragmentation and purging leave behind; the
// first fit among them could fault in a whole fresh run beside a run that
// is mostly resident. With `retired`, runs holding a retired span's head
// count too, after others that fault in as much. Stops at a run with one
// fresh slice (an earlier pass took any run resident whole) or after a
// bounded number of candidates: it runs under a lock thread heaps share.
int least_fresh_run(Heap* h, unsigned count, bool avoid_slice0, bool retired, Segment** found) {
  int best = -1;
  unsigned best_cost = ~0u;
  unsigned budget = 4 * kSlicesPerSegment;
  for_each_candidate(h, kFreeBins, count, kSegmentsSearched, [&](SegmentNode* n) {
    uint64_t free = n->free_mask;
    if (avoid_slice0) free &= ~uint64_t{1};
    if (!retired) free &= ~n->retired_spans;
    for (uint64_t m = run_starts(free, count); m; m &= m - 1) {
      int f = __builtin_ctzll(m);
      uint64_t run = run_bits(unsigned(f), count);
      unsigned cost =
          2 * unsigned(popcount(run & ~n->committed_mask)) + ((run & n->retired_spans) != 0);
      if (cost < best_cost) best = f, best_cost = cost, *found = n->seg;
      if (best_cost <= 2 || --budget == 0) return true;
    }
    return false;
  });
  return best;
}

// The free resident slice whose touched bytes are closest to `touch`, or
// -1. Fresh slices and retired span heads are left to the run searches:
// a small slab on a fresh slice would leave a resident one idle. The search
// ends at a close enough slice, or after two segments' worth: it runs under
// the lock of segments all thread heaps share.
int closest_slice(Heap* h, uint32_t touch, bool avoid_slice0, Segment** found) {
  int best = -1;
  uint32_t best_cost = ~uint32_t{0};
  unsigned budget = 2 * kSlicesPerSegment, left = kSegmentsSearched;
  for (SegmentNode* n = h->segments; n && left; n = n->next, --left) {
    uint64_t free = n->free_mask & n->committed_mask & ~n->retired_spans;
    if (avoid_slice0) free &= ~uint64_t{1};
    Segment* seg = n->seg;
    for (; free; free &= free - 1) {
      int i = __builtin_ctzll(free);
      uint32_t dirty = seg->slabs[i].dirty;
      uint32_t cost = dirty > touch ? dirty - touch : touch - dirty;
      if (cost < best_cost) best = i, best_cost = cost, *found = seg;
      if (best_cost < kExtentUnit || --budget == 0) return best;
    }
  }
  return best;
}

// Slices [from, to) of the run headed by `head` (committed already; `fresh`
// those that were not) leave the free, purge and retired masks and become
// its tails; h holds them from now on. Fresh slices have touched nothing,
// and h's idle slices go back as much (segment_decommit_idle).
void join_run(Heap* h, Slab* head, unsigned from, unsigned to, uint64_t fresh) {
  Segment* seg = segment_of(head);
  SegmentNode* n = seg->node;
  uint64_t bits = run_bits(slice_index(head) + from, to - from);
  n->free_mask &= ~bits;
  if (!n->free_mask) list_move(h, seg, true);
  bin_refile(h, n);
  n->purge_mask &= ~bits;
  n->retired_spans &= ~bits;
  seg->empty_since = 0;
  for (uint64_t m = fresh; m; m &= m - 1) seg->slabs[__builtin_ctzll(m)].dirty = 0;
  for (unsigned i = from > 1 ? from : 1; i < to; ++i) {
    Slab* t = head + i;
    t->kind = SliceKind::kTail;
    t->head_offset = uint16_t(i);
    slab_set_fast_owner(t, nullptr);
  }
  head->slice_count = uint16_t(to);
  h->held_bytes += size_t(to - from) << kSliceShift;
  if (fresh) segment_decommit_idle(h, size_t(popcount(fresh)) << kSliceShift);
}

}  // namespace

Slab* segment_take_slices(Heap* h, unsigned count, bool avoid_slice0, bool resident_only,
                          uint32_t touch) {
  Segment* found = nullptr;
  // No segment has a free run this long: straight to a new one.
  bool any = bins_from(h, kFreeBins, count) != 0;
  int first = count == 1 && any ? closest_slice(h, touch, avoid_slice0, &found) : -1;
  // Prefer slices that are still committed (no page faults, no OS call),
  // then the free run that faults in fewest. While the first slice of a
  // retired span stays free, a second free of the span is caught instead of
  // freeing whatever block would start at the same address, so such runs
  // come after others of their kind. The default build still takes them
  // before faulting in more pages: a program churning spans would otherwise
  // touch every slice of its segments within one purge delay. The hardened
  // build keeps them for last.
  if (first < 0 && any) first = resident_run(h, count, avoid_slice0, !kSecure, &found);
  if (first < 0 && any && !resident_only) {
    if (kSecure) first = least_fresh_run(h, count, avoid_slice0, false, &found);
    if (first < 0) first = least_fresh_run(h, count, avoid_slice0, true, &found);
  }
  bool created = first < 0;
  if (created && resident_only) return nullptr;
  if (created) {
    found = segment_create(h);
    if (!found) return nullptr;
    first = avoid_slice0 ? 1 : 0;
  }
  uint64_t bits = run_bits(unsigned(first), count);
  uint64_t fresh = bits & ~found->node->committed_mask;
  note_taken(h, found, bits);
  if (!commit_slices(h, found, fresh)) {
    // A segment made for this request would stay empty with empty_since 0,
    // which purging never releases: give it back now.
    if (created) segment_destroy(h, found);
    return nullptr;
  }
  if (!created && h->segments != found->node) {
    // To the front: the walks that look at the newest segments first
    // (closest_slice, the idle decommit) see what was used last.
    list_remove(&h->segments, found->node);
    list_push(&h->segments, found->node);
  }
  Slab* head = &found->slabs[first];
  head->kind = SliceKind::kSlab;
  head->head_offset = 0;
  join_run(h, head, 0, count, fresh);
  return head;
}

bool segment_extend_span(Heap* h, Slab* head, unsigned count) {
  Segment* seg = segment_of(head);
  unsigned first = slice_index(head), old = head->slice_count;
  if (count <= old || first + count > kSlicesPerSegment) return false;
  uint64_t bits = run_bits(first + old, count - old);
  if ((seg->node->free_mask & bits) != bits) return false;
  if (h->max_bytes && h->held_bytes + (size_t(count - old) << kSliceShift) > h->max_bytes)
    return false;
  uint64_t fresh = bits & ~seg->node->committed_mask;
  // Moving copies the block, but into a run that is resident whole it faults
  // in nothing, and the old pages are reused: when one exists, move.
  Segment* elsewhere;
  if (fresh && resident_run(h, count, true, true, &elsewhere) >= 0) return false;
  note_taken(h, seg, bits);
  if (!commit_slices(h, seg, fresh)) return false;
  // A retired span head taken in becomes a tail: a late second free of that
  // span lands inside this one and is reported as an interior free.
  join_run(h, head, old, count, fresh);
  return true;
}

void segment_return_slices(Heap* h, Slab* head, uint64_t now) {
  Segment* seg = segment_of(head);
  SegmentNode* n = seg->node;
  unsigned first = slice_index(head), count = head->slice_count;
  bool span = head->kind == SliceKind::kLarge;
  // Blocks are carved from the slab start on, so a small-class slab (one
  // slice) has touched its slice up to the end of its carved blocks; assume
  // any other touched all of its slices.
  uint32_t touched = kSliceSize;
  if (head->kind == SliceKind::kSlab && head->size_class < kSmallClassCount) {
    uintptr_t end = uintptr_t(head->start) + head->capacity * head->block_size - uintptr_t(seg);
    touched =
        uint32_t(end - (uintptr_t(first) << kSliceShift) + kExtentUnit - 1) & ~(kExtentUnit - 1);
    h->small_extent[head->size_class] = uint8_t(touched / kExtentUnit);
    if (head->dirty > touched) touched = head->dirty;
  }
  for (unsigned i = 0; i < count; ++i) {
    Slab* s = head + i;
    s->kind = SliceKind::kFree;
    slab_set_fast_owner(s, nullptr);
    s->free = nullptr;
    s->list = SlabList::kNone;
    s->free_since = now;
    s->dirty = touched;
  }
  h->held_bytes -= size_t(count) << kSliceShift;
  uint64_t bits = run_bits(first, count);
  if (!n->free_mask) list_move(h, seg, false);
  n->free_mask |= bits;
  bin_refile(h, n);
  // Callers' clocks were read at different times: keep the lower bound.
  if (!n->purge_mask || now < n->purge_since) n->purge_since = now;
  n->purge_mask |= bits & n->committed_mask;
  if (span) n->retired_spans |= uint64_t{1} << first;
  if (n->free_mask == kAllSlices) seg->empty_since = now;
  if (option(GR_OPTION_PURGE_DELAY) == 0) segment_purge(h, now, true);
}

bool segment_purge(Heap* h, uint64_t now, bool force) {
  long delay = option(GR_OPTION_PURGE_DELAY);
  if (delay < 0 && !force) return false;
  if (h->slice_takes != h->takes_seen) {
    h->takes_seen = h->slice_takes;
    h->takes_seen_ms = now;
  }
  bool idle = now - h->takes_seen_ms >= uint64_t(delay);
  uint64_t wait = idle ? level_wait(uint64_t(delay), 0) : slice_wait(h, uint64_t(delay));
  // Empty segments wait the whole delay, or the slices' wait if longer.
  uint64_t cutoff = force ? ~uint64_t{0} : now - std::max(uint64_t(delay), wait);
  uint64_t slice_cutoff = force ? cutoff : now - wait;
  if (!force && now - h->feedback_since >= uint64_t(delay) * kFeedbackDelays) {
    if (h->purge_level > 0 && (h->spared_slices + 2 * h->retaken_slices) * 2 <= h->purged_slices)
      set_purge_level(h, h->purge_level - 1u, now);
    h->purged_slices /= 2;
    h->retaken_slices /= 2;
    h->spared_slices /= 2;
    h->offset_slices /= 2;
    h->offset_retaken /= 2;
    h->feedback_since = now;
  }
  bool pending = false;
  for (SegmentNode *n = h->segments, *next; n; n = next) {
    next = n->next;
    Segment* seg = n->seg;
    if (n->free_mask == kAllSlices && seg->empty_since != 0) {
      if (force || seg->empty_since <= cutoff) {
        segment_destroy(h, seg);
        continue;
      }
      pending = true;
    }
    if (!n->purge_mask) continue;
    if (n->purge_since > slice_cutoff) {  // none due yet: not worth reading them
      pending = true;
      continue;
    }
    uint64_t due = 0, oldest_left = ~uint64_t{0};
    for (uint64_t m = n->purge_mask; m; m &= m - 1) {
      unsigned i = unsigned(__builtin_ctzll(m));
      uint64_t since = seg->slabs[i].free_since;
      if (since <= slice_cutoff)
        due |= uint64_t{1} << i;
      else
        oldest_left = std::min(oldest_left, since);
    }
    n->purge_since = oldest_left;
    if (due) {
      decommit_slices(h, seg, due);
      n->purge_mask &= ~due;
      if (!force) {
        seg->purged_mask |= due;
        h->purged_slices += unsigned(popcount(due));
      }
    }
    if (n->purge_mask) pending = true;
  }
  return pending;
}

// Idle free slices would go back within their purge delay anyway; a heap
// whose resident set grows meanwhile (fresh slices because the free runs
// are too short for the slab asked for, a fresh huge mapping) gives back as
// much of them now, so its peak stays flat instead of growing by what
// fragmentation and the delay strand. Those nearest their deadline go
// first: a slice freed a moment ago is the likeliest to be taken again,
// and faulting it back in would cost more than the delay saved. Of those
// freed a moment ago, a heap keeps up to a 64th of the slices it holds in
// slabs and spans: a program working in rounds (free it all, grow it
// again) would otherwise fault them back in every round. (A 16th kept
// 2.5 MiB more of realloc_growth's 114 MiB peak for no measurable speed.)
//
// Growth is offset in batches of a 64th of what the heap holds (256 KiB to 4
// MiB): a decommit in a process with threads interrupts every CPU that
// runs one of them, to flush its TLB, and under the lock of the segments
// thread heaps share the others wait meanwhile. Offsetting every span as it
// was taken cost threads exchanging blocks of up to 1 MiB 3.7 times their
// run time without offsets (batched: 1.4 times, for 8 % more peak). Growth
// while the heap holds no more idle than it keeps is not owed later, and
// its older idle slices then wait for the purge.
constexpr unsigned kRecentIdleShift = 6;
constexpr size_t kOffsetBatchMin = size_t{256} << 10, kOffsetBatchMax = size_t{4} << 20;
void segment_decommit_idle(Heap* h, size_t bytes) {
  long delay = option(GR_OPTION_PURGE_DELAY);
  if (delay < 0) return;  // never purge: the program asked to keep it
  // Full segments hold all their slices and have none idle.
  size_t idle = 0, held = h->full_segment_count * kSlicesPerSegment;
  unsigned looked = kSegmentsSearched;
  for (SegmentNode* n = h->segments; n && looked; n = n->next, --looked) {
    idle += size_t(popcount(n->purge_mask));
    held += size_t(popcount(~n->free_mask));
  }
  size_t kept = held >> kRecentIdleShift;
  if (idle <= kept) {
    h->offset_due = 0;  // nothing the heap would give back: the growth is not owed later
    return;
  }
  h->offset_due += bytes;
  if (h->offset_due <
      std::clamp(h->held_bytes >> kRecentIdleShift, kOffsetBatchMin, kOffsetBatchMax))
    return;
  size_t count = slices_for(h->offset_due);
  h->offset_due = 0;
  // The clock only once there is something to age: a small program that
  // never frees a slab never asks the time.
  uint64_t now = 0;
  // Slices freed a moment ago stay while most of those offset before came
  // back before their wait (at least the delay) was up: the program is
  // churning, not growing (spans of mixed sizes whose resident free runs
  // were too short took a page fault per page when each fresh slice dropped
  // a recent one). The older ones go first, by the heap's wait: a heap that
  // takes its slices back late has its young ones taken back too.
  bool churning = h->offset_retaken * 4 > h->offset_slices * 3;
  unsigned taken = 0;
  uint64_t wait = std::max(uint64_t(delay), slice_wait(h, uint64_t(delay)));
  for (uint64_t age : {wait / 2, wait / 8, uint64_t{0}}) {
    if (age == 0 && churning) break;
    if (age == 0 && delay > 0 && count) {
      // Less what the passes above took; they decommitted only idle slices.
      idle -= std::min(idle, size_t(taken));
      count = idle > kept ? std::min(count, idle - kept) : 0;
    }
    unsigned left = kSegmentsSearched;
    for (SegmentNode* n = h->segments; n && count && left; n = n->next, --left) {
      if (!n->purge_mask) continue;
      if (now == 0) now = os::now_ms();
      if (n->purge_since + age > now) continue;  // all too young: not worth reading them
      Segment* seg = n->seg;
      uint64_t due = 0, oldest_left = ~uint64_t{0}, m = n->purge_mask;
      for (; m && count; m &= m - 1) {
        uint64_t since = seg->slabs[__builtin_ctzll(m)].free_since;
        if (since + age > now) {
          oldest_left = std::min(oldest_left, since);
          continue;
        }
        due |= m & (~m + 1);
        --count;
        ++taken;
      }
      if (!m) n->purge_since = oldest_left;  // read them all
      if (due) {
        decommit_slices(h, seg, due);
        n->purge_mask &= ~due;
        seg->offset_mask |= due;
        h->offset_slices += unsigned(popcount(due));
      }
    }
  }
}

void segment_release_all(Heap* h) {
  while (h->segments) segment_destroy(h, h->segments->seg);
  while (h->full_segments) segment_destroy(h, h->full_segments->seg);
  h->held_bytes = 0;
}

void segment_reset_all(Heap* h, uint64_t now) {
  // Every one will have free slices.
  while (SegmentNode* n = h->full_segments) list_move(h, n->seg, false);
  for (SegmentNode* n = h->segments; n; n = n->next) {
    Segment* seg = n->seg;
    for (unsigned i = 0; i < kSlicesPerSegment; ++i) {
      Slab* s = &seg->slabs[i];
      std::memset(static_cast<void*>(s), 0, sizeof(Slab));
      s->free_since = now;
      if ((n->committed_mask >> i) & 1) s->dirty = kSliceSize;
    }
    n->free_mask = kAllSlices;
    bin_refile(h, n);
    n->purge_mask = n->committed_mask;
    n->purge_since = now;
    n->retired_spans = 0;
    seg->empty_since = now;
  }
  h->held_bytes = 0;
}

bool segment_reserve_ahead(Heap* h, size_t bytes) {
  for (size_t have = 0; have < bytes; have += kSegmentSize) {
    Segment* seg = segment_create(h);
    if (!seg) return false;
    seg->empty_since = 0;  // reserved on purpose: not released while empty
  }
  return true;
}

}  // namespace granule
