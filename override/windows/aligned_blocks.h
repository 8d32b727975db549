// Granule blocks behind Microsoft's _aligned_* and _aligned_offset_* API,
// shared by the runtime detours and the link-time override. A block from
// _aligned_offset_malloc whose offset breaks the alignment starts inside a
// Granule block, with the block's address stored just before it; every other
// one is a plain Granule block start. Callers check gr_owns first.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "granule.h"

namespace granule::win {

inline bool is_pow2(size_t a) { return a && !(a & (a - 1)); }

// The Granule block holding p (p itself unless p came from an offset block).
inline void* our_base(void* p) {
  if (gr_usable_size(p)) return p;
  void* base;
  std::memcpy(&base, static_cast<char*>(p) - sizeof base, sizeof base);
  const size_t skip = size_t(static_cast<char*>(p) - static_cast<char*>(base));
  if (gr_owns(base) && base < p && gr_usable_size(base) > skip) return base;
  return p;  // not ours to interpret: gr_free reports it when asked to
}

// Bytes usable from p to the end of its block.
inline size_t our_aligned_size(void* p) {
  void* base = our_base(p);
  const size_t usable = gr_usable_size(base);
  const size_t skip = size_t(static_cast<char*>(p) - static_cast<char*>(base));
  return usable > skip ? usable - skip : 0;
}

// p with (p + offset) % align == 0; nullptr for a bad alignment or offset
// (as the CRT: offset must be 0 or below size) or when memory is exhausted.
inline void* aligned_offset_alloc(size_t size, size_t align, size_t offset) {
  if (!is_pow2(align) || (offset && offset >= size)) return nullptr;
  if (align < 16) align = 16;
  if (offset % align == 0) return gr_aligned_alloc(align, size ? size : 1);
  size_t total;
  if (__builtin_add_overflow(size, align + sizeof(void*), &total)) return nullptr;
  char* base = static_cast<char*>(gr_aligned_alloc(align, total));
  if (!base) return nullptr;
  const size_t lead = sizeof(void*) + ((align - (sizeof(void*) + offset) % align) % align);
  char* p = base + lead;
  std::memcpy(p - sizeof(void*), &base, sizeof base);
  return p;
}

inline void aligned_release(void* p) { gr_free(our_base(p)); }

// _aligned_offset_realloc for a block of ours (p may be null).
inline void* aligned_offset_realloc_ours(void* p, size_t size, size_t align, size_t offset) {
  if (!p) return aligned_offset_alloc(size, align, offset);
  if (size == 0) {
    aligned_release(p);
    return nullptr;
  }
  const size_t old = our_aligned_size(p);
  const size_t a = align < 16 ? 16 : align;
  if (is_pow2(align) && size <= old && (uintptr_t(p) + offset) % a == 0) return p;
  void* q = aligned_offset_alloc(size, align, offset);
  if (!q) return nullptr;
  std::memcpy(q, p, old < size ? old : size);
  aligned_release(p);
  return q;
}

// _aligned_offset_recalloc for a block of ours: the bytes past the old usable
// size are zeroed.
inline void* aligned_offset_recalloc_ours(void* p, size_t count, size_t size, size_t align,
                                          size_t offset) {
  size_t total;
  if (__builtin_mul_overflow(count, size, &total)) return nullptr;
  const size_t old = p ? our_aligned_size(p) : 0;
  void* q = aligned_offset_realloc_ours(p, total, align, offset);
  if (q && total > old) std::memset(static_cast<char*>(q) + old, 0, total - old);
  return q;
}

}  // namespace granule::win
