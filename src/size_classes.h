// The one table of size classes. 16-byte steps up to 64 bytes, four classes
// per doubling up to 1 KiB, then nine per doubling up to 128 KiB: eight
// steps of an eighth, and one at a 32nd above the power of two. Rounding
// wastes at most 25 % of any request above 64 bytes (about 10 % on average
// below 1 KiB, 6 % above); a page plus a small header (sqlite's 4104-byte
// pages, a 4 KiB buffer with its descriptor) loses 3 %, not an eighth.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

#include "config.h"

namespace granule {

inline constexpr unsigned kFineFrom = 1024;  // nine classes per doubling above this
inline constexpr unsigned kFinePerDoubling = 9;
inline constexpr unsigned kCoarseClassCount = 4 + 4 * 4;                           // 16 .. 1 KiB
inline constexpr unsigned kClassCount = kCoarseClassCount + kFinePerDoubling * 7;  // .. 128 KiB
inline constexpr unsigned kSmallClassCount = kCoarseClassCount + kFinePerDoubling * 3;  // .. 8 KiB
inline constexpr unsigned kDirectCount = kDirectMax / 16 + 1;

constexpr size_t class_block_size(unsigned c) {
  if (c < 4) return 16 * (c + 1);
  if (c < kCoarseClassCount) {
    unsigned doubling = (c - 4) / 4, step = (c - 4) % 4 + 1;
    size_t base = size_t{64} << doubling;
    return base + (base / 4) * step;
  }
  unsigned doubling = (c - kCoarseClassCount) / kFinePerDoubling;
  unsigned step = (c - kCoarseClassCount) % kFinePerDoubling;
  size_t base = size_t{kFineFrom} << doubling;
  return step == 0 ? base + base / 32 : base + (base / 8) * step;
}

// Class of a request of n bytes (n <= kMediumMax). Branch-light: used on the
// medium path and to fill the direct table.
constexpr unsigned size_class_of(size_t n) {
  if (n <= 64) return n == 0 ? 0 : unsigned((n - 1) >> 4);
  unsigned w = unsigned(std::bit_width(n - 1)) - 1;  // 2^w <= n-1 < 2^(w+1)
  if (n <= kFineFrom) return 4 * (w - 6) + unsigned((n - 1) >> (w - 2));
  size_t base = size_t{1} << w;
  unsigned first = kCoarseClassCount + kFinePerDoubling * (w - 10);
  if (n <= base + base / 32) return first;
  return first + unsigned((n - 1) >> (w - 3)) - 7;
}

// Slab size of a class, in slices: small classes use one slice; medium
// classes about as many as hold ~8 blocks (at most 8 slices), or down to
// half that where the blocks fill the slab better. Once a program has
// touched its pages, a slab's unused tail stays resident: 88 KiB blocks
// leave 72 KiB of 8 slices unused, 8 bytes of 7.
constexpr unsigned class_slab_slices(unsigned c) {
  size_t b = class_block_size(c);
  if (b <= kSmallMax) return 1;
  size_t most = std::bit_ceil(b * 8) / kSliceSize;
  if (most > 8) most = 8;
  size_t best = most;
  for (size_t n = most - 1; n >= (most + 1) / 2; --n) {
    size_t bytes = n * kSliceSize, best_bytes = best * kSliceSize;
    if ((bytes % b) * best_bytes < (best_bytes % b) * bytes) best = n;
  }
  return unsigned(best);
}

static_assert(class_block_size(kClassCount - 1) == kMediumMax);
static_assert(class_block_size(kSmallClassCount - 1) == kSmallMax);
static_assert(size_class_of(kMediumMax) == kClassCount - 1);
static_assert(size_class_of(65) == 4 && size_class_of(129) == 8 && size_class_of(1024) == 19);
static_assert(size_class_of(1025) == 20 && class_block_size(20) == 1056);
static_assert(size_class_of(1057) == 21 && class_block_size(21) == 1152);
static_assert(class_block_size(size_class_of(4104)) == 4224);
static_assert(class_block_size(size_class_of(4225)) == 4608);
static_assert(kClassCount < 255, "a class index fits in a byte (kClassCount marks large spans)");

}  // namespace granule
