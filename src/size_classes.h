// The one table of size classes. 16-byte steps up to 64 bytes, then four
// classes per doubling, so rounding wastes at most 25 % (about 10 % on
// average) of any request above 64 bytes.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

#include "config.h"

namespace granule {

inline constexpr unsigned kClassCount = 4 + 4 * 11;  // 16 .. 128 KiB
inline constexpr unsigned kSmallClassCount = 4 + 4 * 7;  // 16 .. 8 KiB
inline constexpr unsigned kDirectCount = kDirectMax / 16 + 1;

constexpr size_t class_block_size(unsigned c) {
  if (c < 4) return 16 * (c + 1);
  unsigned doubling = (c - 4) / 4, step = (c - 4) % 4 + 1;
  size_t base = size_t{64} << doubling;
  return base + (base / 4) * step;
}

// Class of a request of n bytes (n <= kMediumMax). Branch-light: used on the
// medium path and to fill the direct table.
constexpr unsigned size_class_of(size_t n) {
  if (n <= 64) return n == 0 ? 0 : unsigned((n - 1) >> 4);
  unsigned w = unsigned(std::bit_width(n - 1)) - 1;  // 2^w <= n-1 < 2^(w+1)
  return 4 * (w - 6) + unsigned((n - 1) >> (w - 2));
}

// Slab size of a class, in slices: small classes use one slice; medium
// classes as many as hold ~8 blocks, at most 8 slices.
constexpr unsigned class_slab_slices(unsigned c) {
  size_t b = class_block_size(c);
  if (b <= kSmallMax) return 1;
  size_t want = std::bit_ceil(b * 8);
  size_t slices = want / kSliceSize;
  return unsigned(slices > 8 ? 8 : slices);
}

static_assert(class_block_size(kClassCount - 1) == kMediumMax);
static_assert(class_block_size(kSmallClassCount - 1) == kSmallMax);
static_assert(size_class_of(kMediumMax) == kClassCount - 1);
static_assert(size_class_of(65) == 4 && size_class_of(129) == 8 && size_class_of(1024) == 19);

}  // namespace granule
