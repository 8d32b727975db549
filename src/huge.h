// Huge blocks: larger than kLargeMax, each in its own mapping aligned to the
// segment size (so the segment map finds it), with a header page in front.
// Freed mappings are cached for the purge delay, so programs that allocate
// and free big buffers don't map, fault in and unmap every time: where the OS
// can split and move mappings (Linux), a cached mapping is split to fit and
// several are moved together to make a bigger one, pages and all.
#pragma once

#include <cstddef>
#include <cstdint>

#include "types.h"

namespace granule {

// owner: a first-class heap, or nullptr for blocks of thread heaps.
// zero: the block must read as zeros (fresh mappings already do).
// *fresh: bytes newly mapped or committed for it (cache hits add none).
void* huge_alloc(Heap* owner, size_t size, size_t alignment, bool zero, size_t* fresh);
// p is in a kMapHuge/kMapHugeTail chunk.
void huge_free(uintptr_t p);
size_t huge_usable_size(uintptr_t p);
// Grow the huge block at p (a thread heap's) to hold `size` bytes by moving
// its pages to a bigger mapping: no copy, and the old pages are not held
// twice. nullptr (p untouched) where that can't be done. *fresh: the bytes
// the block grew by.
void* huge_grow(uintptr_t p, size_t size, size_t* fresh);
Heap* huge_owner(uintptr_t p);
// Unmap every huge block of a first-class heap (destroy/reset); under h->lock.
void huge_release_heap(Heap* h);
// Release cached mappings past the delay (all when force); true if some wait.
bool huge_purge(uint64_t now, bool force);
// A segment-sized, segment-aligned piece of a cached mapping, its pages still
// resident, for a new segment (so memory a program freed as huge blocks
// serves its small ones without new page faults); nullptr if none.
void* huge_cache_take_segment();
void huge_lock();
void huge_unlock();
void huge_reset_lock();

}  // namespace granule
