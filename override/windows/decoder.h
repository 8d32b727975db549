// An x86-64 instruction length decoder and relocator, enough for function
// prologues: it finds where each instruction ends, which ones address memory
// RIP-relative and which ones are relative branches, and copies whole
// instructions to another address with those operands fixed up. The patcher
// uses it to build trampolines (the original function's first instructions,
// then a jump back).
//
// Pure computation on byte buffers: no OS calls, so it is unit-tested on Linux
// and under Wine alike. Addresses are passed separately from the buffers so a
// test can relocate "as if" code lived anywhere.
#pragma once

#include <cstddef>
#include <cstdint>

namespace granule::win {

enum class BranchKind : uint8_t {
  kNone,
  kJcc,   // 7x rel8, 0F 8x rel32
  kJmp,   // EB rel8, E9 rel32
  kCall,  // E8 rel32
  kLoop,  // E0-E3 rel8 (loopne/loope/loop/jrcxz): decoded, not relocatable
};

struct Instruction {
  uint8_t length = 0;         // 0: not decoded
  uint8_t opcode_offset = 0;  // first opcode byte (after prefixes/REX/VEX)
  uint8_t disp_offset = 0;    // rip_relative: offset of the disp32
  uint8_t rel_offset = 0;     // branch: offset of the relative immediate
  uint8_t rel_size = 0;       // branch: 1 or 4
  uint8_t condition = 0;      // kJcc: condition code 0..15 (low nibble)
  BranchKind branch = BranchKind::kNone;
  bool rip_relative = false;  // ModRM mod=00 rm=101: [rip + disp32]
  bool ends_flow = false;     // ret, unconditional jmp (direct or indirect), int3, ud2
};

// Decode one instruction of at most `avail` bytes (15 at most are read).
// Returns false for invalid, truncated or unsupported encodings (EVEX, XOP,
// 3DNow!, 16-bit relative branches).
bool decode(const uint8_t* code, size_t avail, Instruction* out);

// The absolute target of a relative branch decoded at `address`.
uint64_t branch_target(const uint8_t* code, uint64_t address, const Instruction& insn);
// The absolute address a RIP-relative operand refers to.
uint64_t rip_target(const uint8_t* code, uint64_t address, const Instruction& insn);

enum class RelocateStatus : uint8_t {
  kOk,
  kDecodeFailed,     // an instruction in the range could not be decoded
  kTooShort,         // the function ends (ret/jmp) before min_bytes and no padding follows
  kUnsupported,      // loop/jrcxz in the range
  kBranchIntoPatch,  // a copied branch targets the bytes that will be overwritten
  kOutOfRange,       // a RIP-relative operand can't reach its data from the new place
  kNoSpace,          // the output buffer is too small
};

const char* relocate_status_text(RelocateStatus status);

struct Relocation {
  RelocateStatus status = RelocateStatus::kOk;
  size_t copied = 0;   // bytes of the source consumed (whole instructions)
  size_t written = 0;  // bytes written to the output
};

// Bytes a relocation may need: each instruction can grow to 16 bytes (a short
// jcc becomes jcc-not over an absolute jump), plus the jump back (14).
inline constexpr size_t kMaxTrampolineSize = 5 * 16 + 14 + 2;

// Copy whole instructions from `src` (which lives at `src_address`) until at
// least `min_bytes` are covered, into `dst` (which will live at
// `dst_address`), then append an absolute jump back to src_address + copied,
// unless the copied code already left (ret/jmp). `src_avail` bounds reads.
// RIP-relative displacements are re-based; relative branches become rel32
// when the target is reachable from dst and absolute (FF 25 / FF 15) forms
// otherwise. Branches into [src_address, src_address + min_bytes) are
// refused: those bytes will hold the patch.
Relocation relocate(const uint8_t* src, size_t src_avail, uint64_t src_address, size_t min_bytes,
                    uint8_t* dst, size_t dst_capacity, uint64_t dst_address);

// Emit `FF 25 00000000 <abs64>` (jmp [rip+0]) at dst: 14 bytes.
inline constexpr size_t kAbsJumpSize = 14;
void emit_abs_jump(uint8_t* dst, uint64_t target);

}  // namespace granule::win
