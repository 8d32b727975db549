// x86-64 instruction lengths (64-bit mode only), from the opcode maps of the
// Intel SDM volume 2, appendix A. Only what decides the length is modelled:
// prefixes, REX, VEX, the opcode map, ModRM/SIB/displacement and the
// immediate size.
#include "decoder.h"

namespace granule::win {
namespace {

// Immediate kinds.
enum : uint8_t {
  kImmNone,
  kImm8,
  kImm16,
  kImmZ,      // 16 with 66, else 32
  kImmV,      // B8-BF: 64 with REX.W, 16 with 66, else 32
  kImmMoffs,  // A0-A3: 64-bit address (32 with 67)
  kImmEnter,  // C8: imm16 + imm8
  kImmGrp3,   // F6/F7: imm8/immz only when ModRM.reg is 0 or 1
  kRel8,
  kRel32,
  kInvalid,
};

struct OpInfo {
  bool modrm;
  uint8_t imm;
};

OpInfo one_byte(uint8_t op) {
  if (op < 0x40) {
    const uint8_t lo = op & 7;
    switch (op) {
      case 0x06:
      case 0x07:
      case 0x0E:
      case 0x16:
      case 0x17:
      case 0x1E:
      case 0x1F:
      case 0x27:
      case 0x2F:
      case 0x37:
      case 0x3F:
        return {false, kInvalid};
      default:
        break;
    }
    if (lo < 4) return {true, kImmNone};
    if (lo == 4) return {false, kImm8};
    if (lo == 5) return {false, kImmZ};
    return {false, kInvalid};  // prefixes 26/2E/36/3E and 0F are handled by the caller
  }
  if (op < 0x60) return {false, kImmNone};  // 40-4F (REX, handled earlier), push/pop
  if (op >= 0x70 && op <= 0x7F) return {false, kRel8};
  if (op >= 0x91 && op <= 0x9F) return {false, op == 0x9A ? uint8_t(kInvalid) : uint8_t(kImmNone)};
  if (op >= 0xB0 && op <= 0xB7) return {false, kImm8};
  if (op >= 0xB8 && op <= 0xBF) return {false, kImmV};
  if (op >= 0xD8 && op <= 0xDF) return {true, kImmNone};  // x87
  switch (op) {
    case 0x60:
    case 0x61:
    case 0x62:
    case 0x82:
    case 0x9A:
    case 0xCE:
    case 0xD4:
    case 0xD5:
    case 0xD6:
    case 0xEA:
      return {false, kInvalid};
    case 0x63:
      return {true, kImmNone};
    case 0x68:
      return {false, kImmZ};
    case 0x69:
      return {true, kImmZ};
    case 0x6A:
      return {false, kImm8};
    case 0x6B:
      return {true, kImm8};
    case 0x80:
    case 0x83:
    case 0xC0:
    case 0xC1:
    case 0xC6:
      return {true, kImm8};
    case 0x81:
    case 0xC7:
      return {true, kImmZ};
    case 0x90:
      return {false, kImmNone};
    case 0xA0:
    case 0xA1:
    case 0xA2:
    case 0xA3:
      return {false, kImmMoffs};
    case 0xA8:
      return {false, kImm8};
    case 0xA9:
      return {false, kImmZ};
    case 0xC2:
    case 0xCA:
      return {false, kImm16};
    case 0xC8:
      return {false, kImmEnter};
    case 0xCD:
      return {false, kImm8};
    case 0xE0:
    case 0xE1:
    case 0xE2:
    case 0xE3:
    case 0xEB:
      return {false, kRel8};
    case 0xE4:
    case 0xE5:
    case 0xE6:
    case 0xE7:
      return {false, kImm8};
    case 0xE8:
    case 0xE9:
      return {false, kRel32};
    case 0xF6:
    case 0xF7:
      return {true, kImmGrp3};
    case 0x84:
    case 0x85:
    case 0x86:
    case 0x87:
    case 0x88:
    case 0x89:
    case 0x8A:
    case 0x8B:
    case 0x8C:
    case 0x8D:
    case 0x8E:
    case 0x8F:
    case 0xD0:
    case 0xD1:
    case 0xD2:
    case 0xD3:
    case 0xFE:
    case 0xFF:
      return {true, kImmNone};
    default:
      return {false,
              kImmNone};  // 6C-6F, A4-A7, AA-AF, C3, C9, CB-CC, CF, D7, EC-EF, F1, F4-F5, F8-FD
  }
}

OpInfo two_byte(uint8_t op) {  // 0F xx
  if (op >= 0x80 && op <= 0x8F) return {false, kRel32};
  if (op >= 0xC8 && op <= 0xCF) return {false, kImmNone};  // bswap
  switch (op) {
    case 0x04:
    case 0x0A:
    case 0x0C:
    case 0x0F:
    case 0x24:
    case 0x25:
    case 0x26:
    case 0x27:
    case 0x36:
    case 0x39:
    case 0x3B:
    case 0x3C:
    case 0x3D:
    case 0x3E:
    case 0x3F:
    case 0x7A:
    case 0x7B:
    case 0xA6:
    case 0xA7:
      return {false, kInvalid};  // 0F 0F (3DNow!) included: rare and odd-shaped
    case 0x05:
    case 0x06:
    case 0x07:
    case 0x08:
    case 0x09:
    case 0x0B:
    case 0x0E:
    case 0x30:
    case 0x31:
    case 0x32:
    case 0x33:
    case 0x34:
    case 0x35:
    case 0x37:
    case 0x77:
    case 0xA0:
    case 0xA1:
    case 0xA2:
    case 0xA8:
    case 0xA9:
    case 0xAA:
      return {false, kImmNone};
    case 0x70:
    case 0x71:
    case 0x72:
    case 0x73:
    case 0xA4:
    case 0xAC:
    case 0xBA:
    case 0xC2:
    case 0xC4:
    case 0xC5:
    case 0xC6:
      return {true, kImm8};
    default:
      return {true, kImmNone};
  }
}

bool is_legacy_prefix(uint8_t b) {
  switch (b) {
    case 0xF0:
    case 0xF2:
    case 0xF3:
    case 0x2E:
    case 0x36:
    case 0x3E:
    case 0x26:
    case 0x64:
    case 0x65:
    case 0x66:
    case 0x67:
      return true;
    default:
      return false;
  }
}

int32_t read_i32(const uint8_t* p) {
  return int32_t(uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 |
                 uint32_t(p[3]) << 24);
}

void write_i32(uint8_t* p, int32_t v) {
  const uint32_t u = uint32_t(v);
  p[0] = uint8_t(u);
  p[1] = uint8_t(u >> 8);
  p[2] = uint8_t(u >> 16);
  p[3] = uint8_t(u >> 24);
}

void write_u64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i));
}

bool fits_i32(int64_t v) { return v >= INT32_MIN && v <= INT32_MAX; }

}  // namespace

bool decode(const uint8_t* code, size_t avail, Instruction* out) {
  *out = Instruction{};
  if (avail > 15) avail = 15;
  size_t i = 0;
  bool opsize16 = false, addr32 = false, rex_w = false;
  // Legacy prefixes and REX; a REX counts only right before the opcode.
  for (; i < avail; ++i) {
    const uint8_t b = code[i];
    if ((b & 0xF0) == 0x40) {
      rex_w = (b & 0x08) != 0;
    } else if (is_legacy_prefix(b)) {
      rex_w = false;
      if (b == 0x66) opsize16 = true;
      if (b == 0x67) addr32 = true;
    } else {
      break;
    }
  }
  if (i >= avail) return false;

  OpInfo info;
  uint8_t op = code[i];
  int map = 1;                     // 1: one-byte, 2: 0F, 3: 0F38, 4: 0F3A
  if (op == 0xC4 || op == 0xC5) {  // VEX: always VEX in 64-bit mode
    const size_t vex_len = op == 0xC4 ? 3 : 2;
    if (i + vex_len >= avail) return false;
    map = 2;
    if (op == 0xC4) {
      const uint8_t m = code[i + 1] & 0x1F;
      if (m < 1 || m > 3) return false;
      map = m + 1;
      rex_w = (code[i + 2] & 0x80) != 0;
    }
    i += vex_len;
    out->opcode_offset = uint8_t(i);
    op = code[i++];
    if (map == 2) {
      info = two_byte(op);
      if (op == 0x77) info = {false, kImmNone};  // vzeroupper / vzeroall
    } else {
      info = {true, map == 4 ? uint8_t(kImm8) : uint8_t(kImmNone)};
    }
    if (info.imm == kRel32 || info.imm == kInvalid) return false;
  } else {
    out->opcode_offset = uint8_t(i);
    ++i;
    if (op == 0x0F) {
      if (i >= avail) return false;
      op = code[i++];
      if (op == 0x38 || op == 0x3A) {
        if (i >= avail) return false;
        info = {true, op == 0x3A ? uint8_t(kImm8) : uint8_t(kImmNone)};
        map = op == 0x38 ? 3 : 4;
        op = code[i++];
      } else {
        map = 2;
        info = two_byte(op);
      }
    } else {
      info = one_byte(op);
    }
  }
  if (info.imm == kInvalid) return false;

  uint8_t modrm = 0;
  if (info.modrm) {
    if (i >= avail) return false;
    modrm = code[i++];
    const uint8_t mod = modrm >> 6, rm = modrm & 7;
    if (mod != 3) {
      if (rm == 4) {  // SIB
        if (i >= avail) return false;
        const uint8_t sib = code[i++];
        if (mod == 0 && (sib & 7) == 5) i += 4;  // no base: disp32
      } else if (mod == 0 && rm == 5) {
        out->rip_relative = true;
        out->disp_offset = uint8_t(i);
        i += 4;
      }
      if (mod == 1) i += 1;
      if (mod == 2) i += 4;
    }
  }

  size_t imm = 0;
  switch (info.imm) {
    case kImm8:
      imm = 1;
      break;
    case kImm16:
      imm = 2;
      break;
    case kImmZ:
      imm = opsize16 ? 2 : 4;
      break;
    case kImmV:
      imm = rex_w ? 8 : (opsize16 ? 2 : 4);
      break;
    case kImmMoffs:
      imm = addr32 ? 4 : 8;
      break;
    case kImmEnter:
      imm = 3;
      break;
    case kImmGrp3:
      if (((modrm >> 3) & 7) < 2) imm = op == 0xF6 ? 1 : (opsize16 ? 2 : 4);
      break;
    case kRel8:
    case kRel32:
      // 66 without REX.W: 16-bit targets on AMD, ignored by Intel; never emitted.
      if (opsize16 && !rex_w) return false;
      imm = info.imm == kRel8 ? 1 : 4;
      out->rel_offset = uint8_t(i);
      out->rel_size = uint8_t(imm);
      break;
    default:
      break;
  }
  i += imm;
  if (i > avail) return false;
  out->length = uint8_t(i);

  if (map == 1) {
    if ((op >= 0x70 && op <= 0x7F)) {
      out->branch = BranchKind::kJcc;
      out->condition = op & 0x0F;
    } else if (op >= 0xE0 && op <= 0xE3) {
      out->branch = BranchKind::kLoop;
    } else if (op == 0xEB || op == 0xE9) {
      out->branch = BranchKind::kJmp;
      out->ends_flow = true;
    } else if (op == 0xE8) {
      out->branch = BranchKind::kCall;
    } else if (op == 0xC3 || op == 0xC2 || op == 0xCC || op == 0xCB || op == 0xCA) {
      out->ends_flow = true;
    } else if (op == 0xFF && ((modrm >> 3) & 7) == 4) {  // jmp r/m64
      out->ends_flow = true;
    }
  } else if (map == 2 && out->opcode_offset + 1 < out->length) {
    if (code[out->opcode_offset] == 0x0F && op >= 0x80 && op <= 0x8F) {
      out->branch = BranchKind::kJcc;
      out->condition = op & 0x0F;
    } else if (code[out->opcode_offset] == 0x0F && op == 0x0B) {
      out->ends_flow = true;  // ud2
    }
  }
  return true;
}

uint64_t branch_target(const uint8_t* code, uint64_t address, const Instruction& insn) {
  const int64_t rel = insn.rel_size == 1 ? int64_t(int8_t(code[insn.rel_offset]))
                                         : int64_t(read_i32(code + insn.rel_offset));
  return address + insn.length + uint64_t(rel);
}

uint64_t rip_target(const uint8_t* code, uint64_t address, const Instruction& insn) {
  return address + insn.length + uint64_t(int64_t(read_i32(code + insn.disp_offset)));
}

void emit_abs_jump(uint8_t* dst, uint64_t target) {
  dst[0] = 0xFF;
  dst[1] = 0x25;
  write_i32(dst + 2, 0);
  write_u64(dst + 6, target);
}

const char* relocate_status_text(RelocateStatus status) {
  switch (status) {
    case RelocateStatus::kOk:
      return "ok";
    case RelocateStatus::kDecodeFailed:
      return "instruction not decoded";
    case RelocateStatus::kTooShort:
      return "function shorter than the patch";
    case RelocateStatus::kUnsupported:
      return "loop/jrcxz in the patched bytes";
    case RelocateStatus::kBranchIntoPatch:
      return "branch into the patched bytes";
    case RelocateStatus::kOutOfRange:
      return "RIP-relative operand out of reach";
    case RelocateStatus::kNoSpace:
      return "trampoline buffer too small";
  }
  return "?";
}

namespace {

// Emit one relocated branch at dst (which lives at `at`). Returns bytes
// written, 0 when it does not fit.
size_t emit_branch(const Instruction& insn, uint64_t target, uint8_t* dst, size_t room,
                   uint64_t at) {
  if (insn.branch == BranchKind::kJmp) {
    const int64_t rel = int64_t(target - (at + 5));
    if (fits_i32(rel)) {
      if (room < 5) return 0;
      dst[0] = 0xE9;
      write_i32(dst + 1, int32_t(rel));
      return 5;
    }
    if (room < kAbsJumpSize) return 0;
    emit_abs_jump(dst, target);
    return kAbsJumpSize;
  }
  if (insn.branch == BranchKind::kCall) {
    const int64_t rel = int64_t(target - (at + 5));
    if (fits_i32(rel)) {
      if (room < 5) return 0;
      dst[0] = 0xE8;
      write_i32(dst + 1, int32_t(rel));
      return 5;
    }
    // call [rip+2]; jmp +8; <abs64>
    if (room < 16) return 0;
    dst[0] = 0xFF;
    dst[1] = 0x15;
    write_i32(dst + 2, 2);
    dst[6] = 0xEB;
    dst[7] = 0x08;
    write_u64(dst + 8, target);
    return 16;
  }
  // kJcc
  const int64_t rel = int64_t(target - (at + 6));
  if (fits_i32(rel)) {
    if (room < 6) return 0;
    dst[0] = 0x0F;
    dst[1] = uint8_t(0x80 | insn.condition);
    write_i32(dst + 2, int32_t(rel));
    return 6;
  }
  // j!cc +14; jmp [rip+0] <abs64>
  if (room < 2 + kAbsJumpSize) return 0;
  dst[0] = uint8_t(0x70 | (insn.condition ^ 1));
  dst[1] = uint8_t(kAbsJumpSize);
  emit_abs_jump(dst + 2, target);
  return 2 + kAbsJumpSize;
}

bool is_padding(uint8_t b) { return b == 0xCC || b == 0x90; }

}  // namespace

Relocation relocate(const uint8_t* src, size_t src_avail, uint64_t src_address, size_t min_bytes,
                    uint8_t* dst, size_t dst_capacity, uint64_t dst_address) {
  Relocation r;
  bool left = false;
  while (r.copied < min_bytes) {
    Instruction insn;
    if (!decode(src + r.copied, src_avail - r.copied, &insn)) {
      r.status = RelocateStatus::kDecodeFailed;
      return r;
    }
    const uint8_t* in = src + r.copied;
    const uint64_t in_at = src_address + r.copied;
    uint8_t* out = dst + r.written;
    const uint64_t out_at = dst_address + r.written;
    const size_t room = dst_capacity - r.written;
    size_t n = 0;
    if (insn.branch == BranchKind::kLoop) {
      r.status = RelocateStatus::kUnsupported;
      return r;
    }
    if (insn.branch != BranchKind::kNone) {
      const uint64_t target = branch_target(in, in_at, insn);
      if (target >= src_address && target < src_address + min_bytes) {
        r.status = RelocateStatus::kBranchIntoPatch;
        return r;
      }
      n = emit_branch(insn, target, out, room, out_at);
      if (n == 0) {
        r.status = RelocateStatus::kNoSpace;
        return r;
      }
    } else {
      if (room < insn.length) {
        r.status = RelocateStatus::kNoSpace;
        return r;
      }
      for (size_t k = 0; k < insn.length; ++k) out[k] = in[k];
      n = insn.length;
      if (insn.rip_relative) {
        const uint64_t data = rip_target(in, in_at, insn);
        const int64_t disp = int64_t(data - (out_at + insn.length));
        if (!fits_i32(disp)) {
          r.status = RelocateStatus::kOutOfRange;
          return r;
        }
        write_i32(out + insn.disp_offset, int32_t(disp));
      }
    }
    r.copied += insn.length;
    r.written += n;
    if (insn.ends_flow) {
      left = true;
      break;
    }
  }
  if (left && r.copied < min_bytes) {
    // The function is over; the patch may only spill into int3/nop padding.
    if (src_avail < min_bytes) {
      r.status = RelocateStatus::kTooShort;
      return r;
    }
    for (size_t k = r.copied; k < min_bytes; ++k) {
      if (!is_padding(src[k])) {
        r.status = RelocateStatus::kTooShort;
        return r;
      }
    }
  }
  if (!left) {
    if (dst_capacity - r.written < kAbsJumpSize) {
      r.status = RelocateStatus::kNoSpace;
      return r;
    }
    emit_abs_jump(dst + r.written, src_address + r.copied);
    r.written += kAbsJumpSize;
  }
  return r;
}

}  // namespace granule::win
