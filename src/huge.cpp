#include "huge.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "options.h"
#include "os/os.h"
#include "purge.h"
#include "report.h"
#include "segment.h"
#include "stats.h"
#include "sync.h"

namespace granule {

// At the start of every huge mapping (its own page, so the block after it
// is page-aligned).
struct HugeHeader {
  uint64_t cookie;     // kHugeLive / kHugeCached ^ address
  size_t map_size;     // bytes reserved
  size_t commit_size;  // bytes from the start committed (the block ends there)
  size_t offset;       // block start - mapping start
  size_t end;          // live: where the block's usable bytes end (page-rounded)
  size_t alignment;    // of the mapping
  Heap* owner;         // first-class heap, or nullptr
  HugeHeader* next;    // owner's list, or the cache
  HugeHeader* prev;
  uint64_t freed_at;  // cached: when
  // Cached: [idle_from, map_size) is a mapping that joined this one on free
  // (coalesce), idle since idle_since; it goes back on its own time. 0: none.
  size_t idle_from;
  uint64_t idle_since;
};

namespace {

constexpr uint64_t kHugeLive = 0x6875676542697421ull;
constexpr uint64_t kHugeCached = 0x6875676543616368ull;
constexpr unsigned kCacheSlots = 64;

SlowLock g_huge_lock;  // the cache and first-class heaps' lists
HugeHeader* g_cache = nullptr;
size_t g_cache_bytes = 0;
unsigned g_cache_count = 0;
// The last thread-heap huge allocation and the bytes it mapped fresh (under
// g_huge_lock). A block freed after it, within the purge delay, and at most
// two thirds its size, is most likely the old copy of a buffer that grew
// into it (a vector reallocating): the program is about to fault in the new
// block's fresh pages, and caching the old one would hold both at its peak.
// Such a block is due at once, up to the bytes the growth mapped fresh; it
// stays in the cache for the moment the purge thread takes to wake, so a
// program that frees a block and then allocates a similar one still reuses
// it. Same-size buffers allocated before their predecessor is freed (double
// buffering) still cycle through the cache.
struct Growth {
  size_t size;   // of the mapping
  size_t fresh;  // its fresh bytes not yet offset by a block given back
  uint64_t at;   // ms
};
Growth g_growth{};
constexpr size_t kOutgrownNum = 2, kOutgrownDen = 3;

// Under g_huge_lock.
bool outgrown(const HugeHeader* hh, uint64_t now, uint64_t delay) {
  if (g_growth.fresh == 0 || now - g_growth.at >= delay ||
      hh->map_size * kOutgrownDen > g_growth.size * kOutgrownNum)
    return false;
  g_growth.fresh -= std::min(g_growth.fresh, hh->commit_size);
  return true;
}

// Purges that took cached mappings off the cache and have not unmapped them
// yet (they unmap outside the lock): a forced purge waits for them, so the
// memory is back with the OS when gr_collect(true) returns.
std::atomic<unsigned> g_unmapping{0};

// The hardened build ends every huge mapping with a guard page.
inline constexpr size_t kHugeGuard = kSecure ? kGuardSize : 0;

inline size_t page_round(size_t n) {
  size_t ps = os::info().page_size;
  return (n + ps - 1) & ~(ps - 1);
}

// Bytes of the mapping for a block that ends `end` bytes into it. A mapping
// that may be cached is whole segments: a block a little bigger than the
// last one fits in its mapping, and cached pieces fill a gap exactly,
// instead of faulting in fresh pages at every step of a slowly growing
// size. Only touched pages become resident. (Hardened: the guard page must
// follow the block; first-class heaps unmap on free.)
inline size_t map_bytes(size_t end, bool cacheable) {
  size_t bytes = page_round(end) + kHugeGuard;
  return !kSecure && cacheable ? (bytes + kSegmentMask) & ~kSegmentMask : bytes;
}

// Of `fresh` bytes at the end of a mapping of `map_size`, those the block
// ending `end` bytes into it covers. The rest (rounding, the guard page) is
// never touched: counting it would have heap_offset_growth give back idle
// memory that nothing replaces.
inline size_t fresh_covered(size_t fresh, size_t map_size, size_t end) {
  size_t slack = map_size - page_round(end);
  return fresh > slack ? fresh - slack : 0;
}

void unlink(HugeHeader*& head, HugeHeader* hh) {
  if (hh->prev)
    hh->prev->next = hh->next;
  else
    head = hh->next;
  if (hh->next) hh->next->prev = hh->prev;
  hh->next = hh->prev = nullptr;
}

void push(HugeHeader*& head, HugeHeader* hh) {
  hh->prev = nullptr;
  hh->next = head;
  if (head) head->prev = hh;
  head = hh;
}

void unmap(HugeHeader* hh) {
  size_t size = hh->map_size;
  map_clear(uintptr_t(hh), size);
  g_stats.reserved.sub(size);
  g_stats.committed.sub(hh->commit_size);
  os::release(hh, size);
  bump(g_stats.os_releases);
}

// The mapping holding p, walking back over tail chunks (only blocks aligned
// to more than a segment start past their first chunk).
HugeHeader* header_of(uintptr_t p) {
  uintptr_t chunk = p & ~kSegmentMask;
  while (map_kind(chunk) == kMapHugeTail) chunk -= kSegmentSize;
  if (map_kind(chunk) != kMapHuge) return nullptr;
  return reinterpret_cast<HugeHeader*>(chunk);
}

// Mark a mapping cached and put it in the cache (its segment-map entries
// stay, so a stale pointer into it still finds its header).
void cache_push(HugeHeader* hh, uint64_t freed_at, size_t idle_from = 0, uint64_t idle_since = 0) {
  hh->cookie = kHugeCached ^ uintptr_t(hh);
  hh->freed_at = freed_at;
  hh->idle_from = idle_from;
  hh->idle_since = idle_since;
  push(g_cache, hh);
  g_cache_bytes += hh->commit_size;
  ++g_cache_count;
}

void cache_unlink(HugeHeader* hh) {
  unlink(g_cache, hh);
  g_cache_bytes -= hh->commit_size;
  --g_cache_count;
}

// The smallest (or largest) cached mapping aligned to `alignment` whose size
// is within [need, limit].
HugeHeader* cache_find(size_t need, size_t limit, size_t alignment, bool smallest) {
  HugeHeader* found = nullptr;
  for (HugeHeader* hh = g_cache; hh; hh = hh->next) {
    if ((uintptr_t(hh) & (alignment - 1)) != 0 || hh->map_size < need || hh->map_size > limit)
      continue;
    if (!found || (smallest ? hh->map_size < found->map_size : hh->map_size > found->map_size))
      found = hh;
  }
  return found;
}

// Cut a fully committed mapping after `keep` bytes (a multiple of the segment
// size); the rest goes back to the cache as a mapping of its own, with the
// header and map entries a stale pointer into it needs, and as idle as the
// part of hh it was. Under g_huge_lock.
HugeHeader* split_off(HugeHeader* hh, size_t keep) {
  if (hh->map_size <= keep) return nullptr;
  auto* rest = reinterpret_cast<HugeHeader*>(reinterpret_cast<char*>(hh) + keep);
  rest->map_size = rest->commit_size = hh->map_size - keep;
  rest->alignment = kSegmentSize;
  rest->next = rest->prev = nullptr;
  map_set(uintptr_t(rest), rest->map_size, kMapHuge, kMapHugeTail);
  if (hh->idle_from == 0)
    cache_push(rest, hh->freed_at);
  else if (hh->idle_from <= keep)
    cache_push(rest, hh->idle_since);
  else
    cache_push(rest, hh->freed_at, hh->idle_from - keep, hh->idle_since);
  hh->map_size = hh->commit_size = keep;
  hh->idle_from = 0;
  return rest;
}

// A mapping being freed takes in the cached mapping right after it, so a
// cache that split one mapping for smaller blocks gets it back whole, and
// blocks of any size up to it reuse the same pages at the same address
// instead of being moved together (assemble) for each bigger one. The part
// taken in keeps its own idle time (the purge cuts it off when due). Only
// upward: what a split leaves behind is above the block. Under g_huge_lock.
void coalesce_up(HugeHeader* hh, uint64_t* idle_since, size_t* idle_from) {
  if (hh->commit_size != hh->map_size) return;
  // Found in the list, not by reading the header at the end: a mapping
  // there that is not cached may be unmapped by its owner at any moment
  // (and one the purge took off the list is, outside the lock).
  HugeHeader* up = g_cache;
  auto* end = reinterpret_cast<char*>(hh) + hh->map_size;
  while (up && reinterpret_cast<char*>(up) != end) up = up->next;
  if (!up || up->commit_size != up->map_size) return;
  cache_unlink(up);
  *idle_from = hh->map_size;
  *idle_since = up->idle_from ? std::min(up->freed_at, up->idle_since) : up->freed_at;
  hh->map_size = hh->commit_size = hh->map_size + up->map_size;
  map_set(uintptr_t(hh), hh->map_size, kMapHuge, kMapHugeTail);
}

// Move a mapping's pages to `to` (reserved, as big), or leave it where it
// is. The map forgets the old range before the move frees it: once freed,
// another thread may be given the range and mark it as its own, which a
// later clear would wipe.
bool move_mapping(HugeHeader* hh, void* to, size_t size) {
  map_clear(uintptr_t(hh), size);
  if (os::move_pages(hh, to, size)) return true;
  map_set(uintptr_t(hh), size, kMapHuge, kMapHugeTail);
  return false;
}

// Gather cached mappings, largest first, into one fresh reservation of `need`
// bytes: their pages move with them (page tables only), so only the part no
// cached piece covers is faulted in (*fresh). nullptr when nothing could be
// moved.
HugeHeader* assemble(size_t need, size_t alignment, size_t* fresh) {
  char* target = static_cast<char*>(os::reserve(need, alignment));
  if (!target) return nullptr;
  bump(g_stats.os_reserves);
  size_t filled = 0;
  while (HugeHeader* piece = cache_find(os::info().page_size, need - filled, 1, false)) {
    size_t size = piece->map_size, committed = piece->commit_size;
    if (committed != size) break;  // only where pages are all there to move
    cache_unlink(piece);
    if (!move_mapping(piece, target + filled, size)) {
      cache_push(piece, piece->freed_at, piece->idle_from, piece->idle_since);
      break;
    }
    g_stats.reserved.sub(size);
    g_stats.committed.sub(committed);
    filled += size;
  }
  if (filled == 0) {
    os::release(target, need);
    return nullptr;
  }
  g_stats.reserved.add(need);
  g_stats.committed.add(need);
  *fresh = need - filled;
  auto* hh = reinterpret_cast<HugeHeader*>(target);
  hh->map_size = hh->commit_size = need;
  hh->alignment = alignment;
  hh->next = hh->prev = nullptr;
  return hh;
}

// A cached mapping for `need` bytes, resident where it was used before, so
// reusing it costs no page faults. Best fit among those big enough; where
// mappings can be split, the whole segments past `need` go back to the cache
// as their own mapping, and when none is big enough, cached pieces are moved
// together (assemble). The hardened build takes exact fits only, so the
// guard page stays right after the block.
HugeHeader* take_cached(size_t need, size_t alignment, size_t* fresh) {
  const bool split = !kSecure && os::can_split();
  LockGuard guard(g_huge_lock);
  if (!g_cache) return nullptr;
  size_t limit = kSecure ? need : split ? ~size_t{0} : 2 * need;
  HugeHeader* best = cache_find(need, limit, alignment, true);
  if (!best) return split ? assemble(need, alignment, fresh) : nullptr;
  cache_unlink(best);
  // Where it splits, `need` is whole segments already (map_bytes).
  if (split && best->commit_size == best->map_size) split_off(best, need);
  return best;
}

// Make [0, need) of a reused mapping committed. A committed tail stays: its
// pages are resident from the last use, and dropping them would only fault
// them in again when a bigger block comes; the purge releases idle mappings.
// False if the OS refuses (the mapping is then released).
bool fit_cached(HugeHeader* hh, size_t need, size_t* fresh) {
  char* base = reinterpret_cast<char*>(hh);
  if (hh->commit_size < need) {
    if (!os::commit(base + hh->commit_size, need - hh->commit_size)) {
      unmap(hh);
      return false;
    }
    bump(g_stats.os_commits);
    *fresh = need - hh->commit_size;
    g_stats.committed.add(need - hh->commit_size);
    hh->commit_size = need;
    // Hardened: committing may have made the guard page accessible again.
    if constexpr (kSecure) os::protect_none(base + need - kHugeGuard, kHugeGuard);
  }
  return true;
}

}  // namespace

void* huge_grow(uintptr_t p, size_t size, size_t* fresh) {
  *fresh = 0;
  HugeHeader* hh = header_of(p);
  if (!hh || hh->cookie != (kHugeLive ^ uintptr_t(hh)) || p != uintptr_t(hh) + hh->offset ||
      size > kMaxRequest - hh->offset)
    return nullptr;
  size_t old_size = hh->map_size, offset = hh->offset;
  size_t end = page_round(offset + size);
  if (end <= hh->end) return nullptr;  // shrinking: realloc decides
  // Room left in the mapping (its rounding, or a bigger cached one reused).
  if (end + kHugeGuard <= hh->commit_size) {
    hh->end = end;
    return reinterpret_cast<void*>(p);
  }
  if (kSecure || !os::can_split() || hh->owner || hh->commit_size != hh->map_size) return nullptr;
  size_t map_size = map_bytes(offset + size, true);
  char* target = static_cast<char*>(os::reserve(map_size, hh->alignment));
  if (!target) return nullptr;
  bump(g_stats.os_reserves);
  if (!move_mapping(hh, target, old_size)) {
    os::release(target, map_size);
    return nullptr;
  }
  hh = reinterpret_cast<HugeHeader*>(target);  // the header moved with its page
  hh->cookie = kHugeLive ^ uintptr_t(hh);
  hh->map_size = hh->commit_size = map_size;
  hh->end = end;
  g_stats.reserved.add(map_size - old_size);
  g_stats.committed.add(map_size - old_size);
  g_stats.huge_bytes.add(map_size - old_size);
  map_set(uintptr_t(hh), map_size, kMapHuge, kMapHugeTail);
  *fresh = fresh_covered(map_size - old_size, map_size, offset + size);
  return target + offset;
}

void* huge_cache_take_segment() {
  // Hardened: cached pages were decommitted, nothing to gain. Windows can't
  // split a reservation.
  if (kSecure || !os::can_split()) return nullptr;
  HugeHeader* hh;
  {
    LockGuard guard(g_huge_lock);
    hh = g_cache ? cache_find(kSegmentSize, ~size_t{0}, kSegmentSize, true) : nullptr;
    if (!hh || hh->commit_size != hh->map_size) return nullptr;
    cache_unlink(hh);
    split_off(hh, kSegmentSize);
  }
  // The piece leaves the huge side's books; the segment counts it again.
  g_stats.reserved.sub(kSegmentSize);
  g_stats.committed.sub(kSegmentSize);
  // No purge_notify: this runs under the heap's lock (starting the purge
  // thread would allocate through it). Caching the block marked work
  // pending, and the purge thread keeps it so while the new segment's unused
  // slices wait (they are due at once: free since 0).
  return hh;
}

void huge_lock() { g_huge_lock.lock(); }
void huge_unlock() { g_huge_lock.unlock(); }
void huge_reset_lock() { g_huge_lock.reset(); }

void* huge_alloc(Heap* owner, size_t size, size_t alignment, bool zero, size_t* fresh) {
  *fresh = 0;
  size_t ps = os::info().page_size;
  size_t offset = alignment > ps ? alignment : ps;
  if (size > kMaxRequest || offset > kMaxRequest) return nullptr;
  size_t map_size = map_bytes(offset + size, !owner);
  size_t map_align = alignment > kSegmentSize ? alignment : kSegmentSize;
  HugeHeader* hh = owner ? nullptr : take_cached(map_size, map_align, fresh);
  if (hh && !fit_cached(hh, map_size, fresh)) hh = nullptr;
  // A mapping is whole segments, or a reused one larger still: the block
  // ends at the page after its last byte, and only that much is zeroed.
  size_t end = page_round(offset + size);
  if (hh && zero) os::zero(reinterpret_cast<char*>(hh) + offset, end - offset);
  if (!hh) {
    if (owner) {
      LockGuard guard(owner->lock);
      if (owner->max_bytes && owner->held_bytes + map_size > owner->max_bytes) return nullptr;
      owner->held_bytes += map_size;
    }
    void* p = os::reserve(map_size, map_align);
    if (p) bump(g_stats.os_reserves);
    if (p && !os::commit(p, map_size)) {
      os::release(p, map_size);
      p = nullptr;
    }
    if (!p) {
      if (owner) {
        LockGuard guard(owner->lock);
        owner->held_bytes -= map_size;
      }
      return nullptr;
    }
    bump(g_stats.os_commits);
    *fresh = map_size;
    if constexpr (kSecure)
      os::protect_none(static_cast<char*>(p) + map_size - kHugeGuard, kHugeGuard);
    if (option(GR_OPTION_LARGE_PAGES)) os::advise_huge(p, map_size);
    g_stats.reserved.add(map_size);
    g_stats.committed.add(map_size);
    hh = static_cast<HugeHeader*>(p);
    hh->map_size = map_size;
    hh->commit_size = map_size;
    hh->alignment = map_align;
    hh->next = hh->prev = nullptr;
  }
  *fresh = fresh_covered(*fresh, map_size, offset + size);
  if (!owner) {
    // Any huge allocation supersedes the last growth: a block freed after
    // it is no longer the likely old copy of that one.
    uint64_t now = *fresh ? os::now_ms() : 0;
    LockGuard guard(g_huge_lock);
    g_growth = {hh->map_size, *fresh, now};
  }
  hh->cookie = kHugeLive ^ uintptr_t(hh);
  hh->offset = offset;
  hh->end = end;
  hh->owner = owner;
  g_stats.huge_blocks.add(1);
  g_stats.huge_bytes.add(hh->commit_size - offset);
  map_set(uintptr_t(hh), hh->map_size, kMapHuge, kMapHugeTail);
  if (owner) {
    LockGuard guard(owner->lock);
    push(owner->huge, hh);
  }
  return reinterpret_cast<char*>(hh) + offset;
}

void huge_free(uintptr_t p) {
  HugeHeader* hh = header_of(p);
  if (!hh) return report_error(ErrorKind::kInvalidFree, reinterpret_cast<void*>(p), 0);
  if (hh->cookie == (kHugeCached ^ uintptr_t(hh)) && p == uintptr_t(hh) + hh->offset) {
    return report_error(ErrorKind::kDoubleFree, reinterpret_cast<void*>(p),
                        hh->map_size - hh->offset);
  }
  if (hh->cookie != (kHugeLive ^ uintptr_t(hh))) {
    return report_error(ErrorKind::kCorrupt, reinterpret_cast<void*>(p), 0);
  }
  if (p != uintptr_t(hh) + hh->offset) {
    return report_error(ErrorKind::kInteriorFree, reinterpret_cast<void*>(p),
                        hh->map_size - hh->offset);
  }
  // Past ExitProcess a killed thread may hold the locks below; the mapping
  // goes with the process.
  if (os::process_exiting()) return;
  g_stats.huge_blocks.sub(1);
  g_stats.huge_bytes.sub(hh->commit_size - hh->offset);
  if (Heap* owner = hh->owner) {
    LockGuard guard(owner->lock);
    unlink(owner->huge, hh);
    owner->held_bytes -= hh->map_size;
    unmap(hh);
    return;
  }
  // A program that keeps many huge blocks alive cycles through that much:
  // the cache may hold as much as its peak of live huge blocks, so blocks
  // churned at that scale come back without page faults (the purge delay
  // still returns them once idle).
  size_t limit = size_t(option(GR_OPTION_HUGE_CACHE)) << 20;
  size_t peak = g_stats.huge_bytes.peak.load(std::memory_order_relaxed);
  if (limit != 0 && peak > limit) limit = peak;
  bool cached = false, soon = false;
  long delay = option(GR_OPTION_PURGE_DELAY);
  if (limit != 0 && delay != 0) {
    uint64_t now = os::now_ms();
    LockGuard guard(g_huge_lock);
    if (g_cache_count < kCacheSlots && g_cache_bytes + hh->commit_size <= limit) {
      // Hardened: a cached block must not show its old contents, so its pages
      // go back (and are committed again on reuse).
      if constexpr (kSecure) {
        size_t keep = page_round(sizeof(HugeHeader));
        os::decommit(reinterpret_cast<char*>(hh) + keep, hh->commit_size - keep);
        g_stats.committed.sub(hh->commit_size - keep);
        hh->commit_size = keep;
      }
      soon = delay > 0 && outgrown(hh, now, uint64_t(delay));
      size_t idle_from = 0;
      uint64_t idle_since = 0;
      if (!kSecure && !soon && os::can_split()) coalesce_up(hh, &idle_since, &idle_from);
      cache_push(hh, soon ? now - uint64_t(delay) : now, idle_from, idle_since);
      cached = true;
    }
  }
  if (soon)
    purge_notify_soon();
  else if (cached)
    purge_notify();
  else
    unmap(hh);
}

size_t huge_usable_size(uintptr_t p) {
  HugeHeader* hh = header_of(p);
  if (!hh || hh->cookie != (kHugeLive ^ uintptr_t(hh))) return 0;
  uintptr_t start = uintptr_t(hh) + hh->offset, end = uintptr_t(hh) + hh->end;
  if (p != start) return 0;
  return end - p;
}

Heap* huge_owner(uintptr_t p) {
  HugeHeader* hh = header_of(p);
  return hh && hh->cookie == (kHugeLive ^ uintptr_t(hh)) ? hh->owner : nullptr;
}

void huge_release_heap(Heap* h) {
  while (HugeHeader* hh = h->huge) {
    unlink(h->huge, hh);
    h->held_bytes -= hh->map_size;
    g_stats.huge_blocks.sub(1);
    g_stats.huge_bytes.sub(hh->commit_size - hh->offset);
    unmap(hh);
  }
}

bool huge_purge(uint64_t now, bool force) {
  long delay = option(GR_OPTION_PURGE_DELAY);
  HugeHeader* victims = nullptr;
  bool pending = false;
  {
    LockGuard guard(g_huge_lock);
    for (HugeHeader *hh = g_cache, *next; hh; hh = next) {
      next = hh->next;
      if (force || (delay >= 0 && now - hh->freed_at >= uint64_t(delay))) {
        cache_unlink(hh);
        push(victims, hh);
        continue;
      }
      pending = true;
      // The idle part a freed block took in goes on its own time.
      if (hh->idle_from && delay >= 0 && now - hh->idle_since >= uint64_t(delay)) {
        cache_unlink(hh);
        HugeHeader* tail = split_off(hh, hh->idle_from);
        cache_unlink(tail);
        push(victims, tail);
        cache_push(hh, hh->freed_at);
      }
    }
    if (victims) g_unmapping.fetch_add(1, std::memory_order_relaxed);
  }
  if (victims) {
    while (HugeHeader* hh = victims) {
      unlink(victims, hh);
      unmap(hh);
    }
    g_unmapping.fetch_sub(1, std::memory_order_release);
  }
  while (force && g_unmapping.load(std::memory_order_acquire) != 0) os::yield();
  return pending;
}

}  // namespace granule
