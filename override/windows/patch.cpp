#include "patch.h"

#define WIN32_LEAN_AND_MEAN
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>

#include "decoder.h"
#include "near_pool.h"

namespace granule::win {
namespace {

constexpr size_t kPatchSize = 5;  // E9 rel32
SRWLOCK g_patch_lock = SRWLOCK_INIT;

PatchStatus from_relocate(RelocateStatus s) {
  switch (s) {
    case RelocateStatus::kOk:
      return PatchStatus::kOk;
    case RelocateStatus::kDecodeFailed:
      return PatchStatus::kDecodeFailed;
    case RelocateStatus::kTooShort:
      return PatchStatus::kTooShort;
    case RelocateStatus::kUnsupported:
      return PatchStatus::kUnsupported;
    case RelocateStatus::kBranchIntoPatch:
      return PatchStatus::kBranchIntoPatch;
    case RelocateStatus::kOutOfRange:
      return PatchStatus::kOutOfRange;
    case RelocateStatus::kNoSpace:
      return PatchStatus::kDecodeFailed;
  }
  return PatchStatus::kDecodeFailed;
}

// Readable bytes at p, up to `want` (the function may end at a page edge).
size_t readable(const uint8_t* p, size_t want) {
  MEMORY_BASIC_INFORMATION m;
  if (!VirtualQuery(p, &m, sizeof m) || m.State != MEM_COMMIT) return 0;
  if (m.Protect & (PAGE_NOACCESS | PAGE_GUARD)) return 0;
  const uint8_t* end = static_cast<const uint8_t*>(m.BaseAddress) + m.RegionSize;
  const size_t here = size_t(end - p);
  if (here >= want) return want;
  return here + readable(end, want - here);
}

// Write the 5-byte jump; atomically when it fits in one aligned 8-byte word.
bool write_jump(uint8_t* at, const uint8_t* relay) {
  uint8_t jump[kPatchSize];
  const int32_t rel = int32_t(intptr_t(relay) - intptr_t(at + kPatchSize));
  jump[0] = 0xE9;
  for (int i = 0; i < 4; ++i) jump[1 + i] = uint8_t(uint32_t(rel) >> (8 * i));

  const uintptr_t word = uintptr_t(at) & ~uintptr_t(7);
  const bool one_word = uintptr_t(at) + kPatchSize <= word + 8;
  uint8_t* first = one_word ? reinterpret_cast<uint8_t*>(word) : at;
  const size_t span = one_word ? 8 : kPatchSize;
  DWORD old;
  if (!VirtualProtect(first, span, PAGE_EXECUTE_READWRITE, &old)) return false;
  if (one_word) {
    uint64_t* w = reinterpret_cast<uint64_t*>(word);
    uint64_t value = __atomic_load_n(w, __ATOMIC_RELAXED);
    uint8_t* bytes = reinterpret_cast<uint8_t*>(&value);
    const size_t off = uintptr_t(at) - word;
    for (size_t i = 0; i < kPatchSize; ++i) bytes[off + i] = jump[i];
    __atomic_store_n(w, value, __ATOMIC_RELEASE);
  } else {
    for (size_t i = 0; i < kPatchSize; ++i) at[i] = jump[i];
  }
  DWORD ignored;
  VirtualProtect(first, span, old, &ignored);
  FlushInstructionCache(GetCurrentProcess(), first, span);
  return true;
}

}  // namespace

const char* patch_status_text(PatchStatus status) {
  switch (status) {
    case PatchStatus::kOk:
      return "patched";
    case PatchStatus::kDecodeFailed:
      return "instruction not decoded";
    case PatchStatus::kTooShort:
      return "function shorter than the patch";
    case PatchStatus::kUnsupported:
      return "loop/jrcxz in the first bytes";
    case PatchStatus::kBranchIntoPatch:
      return "branch into the patched bytes";
    case PatchStatus::kOutOfRange:
      return "RIP-relative operand out of reach of the trampoline";
    case PatchStatus::kNoNearMemory:
      return "no free memory within 2 GiB";
    case PatchStatus::kProtectFailed:
      return "VirtualProtect failed";
    case PatchStatus::kNullArgument:
      return "null argument";
  }
  return "?";
}

PatchStatus patch_function(void* target, void* replacement, void** original) {
  if (!target || !replacement) return PatchStatus::kNullArgument;
  auto* code = static_cast<uint8_t*>(target);
  const size_t avail = readable(code, 64);
  if (avail == 0) return PatchStatus::kDecodeFailed;

  AcquireSRWLockExclusive(&g_patch_lock);
  PatchStatus status = PatchStatus::kOk;
  // Relay and trampoline in one near block: relay first (14 bytes, padded).
  uint8_t* block = near_alloc(code, 16 + kMaxTrampolineSize);
  const int64_t reach = int64_t(intptr_t(block) - intptr_t(code + kPatchSize));
  if (!block || reach < INT32_MIN || reach > INT32_MAX) {
    status = PatchStatus::kNoNearMemory;
  } else {
    uint8_t* relay = block;
    uint8_t* trampoline = block + 16;
    const Relocation r = relocate(code, avail, uint64_t(uintptr_t(code)), kPatchSize, trampoline,
                                  kMaxTrampolineSize, uint64_t(uintptr_t(trampoline)));
    status = from_relocate(r.status);
    if (status == PatchStatus::kOk) {
      emit_abs_jump(relay, uint64_t(uintptr_t(replacement)));
      FlushInstructionCache(GetCurrentProcess(), block, 16 + r.written);
      if (original) *original = trampoline;
      if (!write_jump(code, relay)) status = PatchStatus::kProtectFailed;
    }
    // On failure the block is simply not used again (a few bytes lost).
  }
  ReleaseSRWLockExclusive(&g_patch_lock);
  return status;
}

PatchStatus patch_probe(void* target) {
  if (!target) return PatchStatus::kNullArgument;
  auto* code = static_cast<uint8_t*>(target);
  const size_t avail = readable(code, 64);
  if (avail == 0) return PatchStatus::kDecodeFailed;
  uint8_t scratch[kMaxTrampolineSize];
  // Relocated "in place": every RIP-relative operand stays in reach.
  const Relocation r = relocate(code, avail, uint64_t(uintptr_t(code)), kPatchSize, scratch,
                                sizeof scratch, uint64_t(uintptr_t(code)));
  return from_relocate(r.status);
}

PatchStatus redirect_function(void* target, void* replacement) {
  if (!target || !replacement) return PatchStatus::kNullArgument;
  auto* code = static_cast<uint8_t*>(target);
  if (readable(code, kPatchSize) < kPatchSize) return PatchStatus::kTooShort;
  AcquireSRWLockExclusive(&g_patch_lock);
  PatchStatus status = PatchStatus::kOk;
  uint8_t* relay = near_alloc(code, 16);
  const int64_t reach = int64_t(intptr_t(relay) - intptr_t(code + kPatchSize));
  if (!relay || reach < INT32_MIN || reach > INT32_MAX) {
    status = PatchStatus::kNoNearMemory;
  } else {
    emit_abs_jump(relay, uint64_t(uintptr_t(replacement)));
    FlushInstructionCache(GetCurrentProcess(), relay, 16);
    if (!write_jump(code, relay)) status = PatchStatus::kProtectFailed;
  }
  ReleaseSRWLockExclusive(&g_patch_lock);
  return status;
}

void* skip_jumps(void* function) {
  auto* p = static_cast<uint8_t*>(function);
  for (int hops = 0; p && hops < 8; ++hops) {
    if (readable(p, 6) < 6) break;
    if (p[0] == 0xE9) {
      int32_t rel;
      __builtin_memcpy(&rel, p + 1, 4);
      p = p + 5 + rel;
    } else if (p[0] == 0xEB) {
      p = p + 2 + int8_t(p[1]);
    } else if (p[0] == 0xFF && p[1] == 0x25) {
      int32_t disp;
      __builtin_memcpy(&disp, p + 2, 4);
      uint8_t* const* slot = reinterpret_cast<uint8_t* const*>(p + 6 + disp);
      if (readable(reinterpret_cast<const uint8_t*>(slot), 8) < 8) break;
      p = *slot;
    } else {
      break;
    }
  }
  return p;
}

}  // namespace granule::win
