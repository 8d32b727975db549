// Every layout constant of Granule, in one place.
#pragma once

#include <cstddef>
#include <cstdint>

namespace granule {

#if defined(GRANULE_SECURE)
inline constexpr bool kSecure = true;
#else
inline constexpr bool kSecure = false;
#endif

// ThreadSanitizer builds (clang says so through __has_feature, GCC through
// __SANITIZE_THREAD__): code that orders memory by hand takes the atomic
// form there, which the sanitizer can follow.
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define GRANULE_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__) && !defined(GRANULE_TSAN)
#define GRANULE_TSAN 1
#endif

// Segments: aligned to their own size, so any pointer finds its segment by
// masking. 4 MiB keeps the per-thread floor small while amortising the OS.
inline constexpr unsigned kSegmentShift = 22;
inline constexpr size_t kSegmentSize = size_t{1} << kSegmentShift;
inline constexpr uintptr_t kSegmentMask = kSegmentSize - 1;

// Slices: the unit a segment is carved into; 64 KiB is Windows' allocation
// granularity, so one slice is one VirtualAlloc granule.
inline constexpr unsigned kSliceShift = 16;
inline constexpr size_t kSliceSize = size_t{1} << kSliceShift;
inline constexpr unsigned kSlicesPerSegment =
    kSegmentSize / kSliceSize;  // 64: one bit each in a uint64_t
static_assert(kSlicesPerSegment == 64);

// The segment header (metadata and slab descriptors) sits in the first
// 16 KiB; the hardened build adds an allocation bitmap (48 KiB in all), and
// its last page is a guard page.
inline constexpr size_t kSegmentHeaderSize = (kSecure ? 48 : 16) * 1024;

// Hardened build: a guard page closes every segment and huge mapping, and
// the last bytes of every slab block hold a canary checked on free.
inline constexpr size_t kGuardSize = 4096;
inline constexpr size_t kCanarySize = kSecure ? 8 : 0;

// User space is below 2^47 on x86-64 (4-level paging) and on Windows.
inline constexpr unsigned kAddressBits = 47;

// Size ranges. Small and medium blocks live in slabs of one class; large
// blocks get a span of whole slices; huge blocks get their own mapping.
inline constexpr size_t kSmallMax = 8 * 1024;     // slab = 1 slice
inline constexpr size_t kMediumMax = 128 * 1024;  // slab = 2..8 slices
inline constexpr size_t kLargeMax = kSegmentSize / 2;
inline constexpr size_t kDirectMax = 1024;  // sizes served by the malloc fast path table
inline constexpr size_t kMinAlign = 16;     // every block, as glibc does

// Cross-thread frees of blocks up to kRemoteRunMaxBlock are held back per
// slab, in a thread's table of kRemoteRunSlots runs of at most
// kRemoteRunLength blocks, and pushed a run at a time: one compare-and-swap
// instead of one per block. What a thread can hold back this way is bounded
// by slots * length * block size (1 MiB).
inline constexpr unsigned kRemoteRunSlots = 64;
inline constexpr uint32_t kRemoteRunLength = 16;
inline constexpr size_t kRemoteRunMaxBlock = 1024;

// Largest request we attempt at all (leaves room for rounding).
inline constexpr size_t kMaxRequest = (size_t{1} << kAddressBits) - kSegmentSize * 2;

#if defined(_WIN32)
inline constexpr bool kWindows = true;
#else
inline constexpr bool kWindows = false;
#endif

}  // namespace granule
