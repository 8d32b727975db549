#include "near_pool.h"

#define WIN32_LEAN_AND_MEAN
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>

namespace granule::win {
namespace {

constexpr size_t kChunkSize = 64 * 1024;
constexpr uint64_t kReach = (uint64_t(1) << 31) - kChunkSize;
constexpr int kMaxChunks = 64;

struct Chunk {
  uint8_t* base;
  size_t used;
};

// Static table: this code runs before (or instead of) any heap we could use.
Chunk g_chunks[kMaxChunks];
int g_chunk_count = 0;

bool within(uint64_t a, uint64_t b, uint64_t reach) { return (a > b ? a - b : b - a) <= reach; }

// (Never name anything `near` or `far` here: windows.h defines both away.)
uint8_t* try_reserve(uint64_t at) {
  if (at == 0) return nullptr;  // VirtualAlloc(NULL) would mean "anywhere"
  void* p = VirtualAlloc(reinterpret_cast<void*>(at), kChunkSize, MEM_RESERVE | MEM_COMMIT,
                         PAGE_EXECUTE_READWRITE);
  if (p && uint64_t(uintptr_t(p)) != at) {
    VirtualFree(p, 0, MEM_RELEASE);
    return nullptr;
  }
  return static_cast<uint8_t*>(p);
}

// Walk the address space away from `target` (down, then up) and reserve the
// first free granule-aligned 64 KiB within reach.
uint8_t* new_chunk(uint64_t target) {
  SYSTEM_INFO si;
  GetSystemInfo(&si);
  const uint64_t gran = si.dwAllocationGranularity;
  const uint64_t lo_app = uint64_t(uintptr_t(si.lpMinimumApplicationAddress));
  const uint64_t hi_app = uint64_t(uintptr_t(si.lpMaximumApplicationAddress));
  const uint64_t lo = target > kReach + lo_app ? target - kReach : lo_app;
  const uint64_t hi = target + kReach < hi_app ? target + kReach : hi_app;
  MEMORY_BASIC_INFORMATION m;

  // Downwards.
  uint64_t at = (target & ~(gran - 1));
  while (at >= lo + gran) {
    at -= gran;
    if (!VirtualQuery(reinterpret_cast<void*>(at), &m, sizeof m)) break;
    const uint64_t base = uint64_t(uintptr_t(m.BaseAddress));
    if (m.State == MEM_FREE && base + m.RegionSize >= at + kChunkSize) {
      if (uint8_t* p = try_reserve(at)) return p;
      continue;
    }
    // Skip the rest of this region (and of its allocation): the loop steps
    // below its start.
    uint64_t start = base;
    if (m.State != MEM_FREE && m.AllocationBase) {
      const uint64_t alloc = uint64_t(uintptr_t(m.AllocationBase));
      if (alloc < start) start = alloc;
    }
    at = start & ~(gran - 1);
  }
  // Upwards.
  at = (target + gran - 1) & ~(gran - 1);
  while (at + kChunkSize <= hi) {
    if (!VirtualQuery(reinterpret_cast<void*>(at), &m, sizeof m)) break;
    const uint64_t base = uint64_t(uintptr_t(m.BaseAddress));
    const uint64_t end = base + m.RegionSize;
    if (m.State == MEM_FREE && end >= at + kChunkSize) {
      if (uint8_t* p = try_reserve(at)) return p;
      at += gran;
      continue;
    }
    at = (end + gran - 1) & ~(gran - 1);
  }
  return nullptr;
}

}  // namespace

uint8_t* near_alloc(const void* anchor, size_t size) {
  const uint64_t target = uint64_t(uintptr_t(anchor));
  size = (size + 15) & ~size_t(15);
  if (size > kChunkSize) return nullptr;
  for (int i = 0; i < g_chunk_count; ++i) {
    Chunk& c = g_chunks[i];
    const uint64_t start = uint64_t(uintptr_t(c.base));
    if (c.used + size <= kChunkSize && within(start, target, kReach) &&
        within(start + kChunkSize, target, kReach)) {
      uint8_t* p = c.base + c.used;
      c.used += size;
      return p;
    }
  }
  if (g_chunk_count == kMaxChunks) return nullptr;
  uint8_t* base = new_chunk(target);
  if (!base) return nullptr;
  g_chunks[g_chunk_count++] = {base, size};
  return base;
}

}  // namespace granule::win
