// The x86-64 decoder and relocator on the byte sequences that start Windows
// x64 C runtime functions (MSVC-compiled msvcrt/ucrtbase: register saves,
// stack allocation, security cookie loads, RIP-relative lea/mov/cmp, a null
// test followed by a short jcc, import jumps, hot-patch padding), not only on
// what Wine's mingw-built runtime looks like. Every encoding here was checked
// against GNU objdump. Runs natively and under Wine.
#include <catch2/catch.hpp>

#include <cstring>
#include <initializer_list>
#include <vector>

#include "decoder.h"

using granule::win::BranchKind;
using granule::win::decode;
using granule::win::Instruction;
using granule::win::relocate;
using granule::win::RelocateStatus;
using granule::win::Relocation;

namespace {

using Bytes = std::vector<uint8_t>;

// Where the "function" lives and where its trampoline goes.
constexpr uint64_t kSrc = 0x00007FF812345000ull;
constexpr uint64_t kNear = kSrc - 0x10000000ull;  // 256 MiB below: rel32 reaches
constexpr uint64_t kFar = 0x0000020000000000ull;  // ~126 TiB away: it doesn't

Instruction dec(const Bytes& b) {
  Instruction insn;
  REQUIRE(decode(b.data(), b.size(), &insn));
  return insn;
}

// Pad with int3 so the decoder never reads past the end of a vector.
Bytes code(std::initializer_list<uint8_t> bytes) {
  Bytes b(bytes);
  b.resize(b.size() + 16, 0xCC);
  return b;
}

int32_t i32_at(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

uint64_t u64_at(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

struct Relocated {
  Relocation r;
  uint8_t out[granule::win::kMaxTrampolineSize];
};

Relocated run(const Bytes& src, uint64_t dst_address, size_t capacity = sizeof(Relocated::out)) {
  Relocated x;
  std::memset(x.out, 0xAA, sizeof x.out);
  x.r = relocate(src.data(), src.size(), kSrc, 5, x.out, capacity, dst_address);
  return x;
}

// The trampoline's tail must be `jmp [rip+0]` to kSrc + copied.
void check_jump_back(const Relocated& x) {
  REQUIRE(x.r.written >= 14);
  const uint8_t* j = x.out + x.r.written - 14;
  CHECK(j[0] == 0xFF);
  CHECK(j[1] == 0x25);
  CHECK(i32_at(j + 2) == 0);
  CHECK(u64_at(j + 6) == kSrc + x.r.copied);
}

}  // namespace

TEST_CASE("lengths of Windows x64 prologue instructions", "[decoder]") {
  struct Case {
    Bytes bytes;
    int length;
    bool rip;
  };
  const Case cases[] = {
      {{0x48, 0x89, 0x5C, 0x24, 0x08}, 5, false},  // mov [rsp+8],rbx
      {{0x48, 0x89, 0x74, 0x24, 0x10}, 5, false},  // mov [rsp+10h],rsi
      {{0x4C, 0x89, 0x44, 0x24, 0x18}, 5, false},  // mov [rsp+18h],r8
      {{0x40, 0x53}, 2, false},                    // push rbx (REX: hot-patchable 2 bytes)
      {{0x40, 0x55}, 2, false},                    // push rbp
      {{0x57}, 1, false},                          // push rdi
      {{0x41, 0x56}, 2, false},                    // push r14
      {{0x48, 0x83, 0xEC, 0x20}, 4, false},        // sub rsp,20h
      {{0x48, 0x81, 0xEC, 0x88, 0x00, 0x00, 0x00}, 7, false},       // sub rsp,88h
      {{0x48, 0x8B, 0xC4}, 3, false},                               // mov rax,rsp
      {{0x4C, 0x8B, 0xDC}, 3, false},                               // mov r11,rsp
      {{0x49, 0x89, 0x5B, 0x08}, 4, false},                         // mov [r11+8],rbx
      {{0x48, 0x89, 0x58, 0x08}, 4, false},                         // mov [rax+8],rbx
      {{0x48, 0x8D, 0x6C, 0x24, 0xF0}, 5, false},                   // lea rbp,[rsp-10h]
      {{0x48, 0x8B, 0xD9}, 3, false},                               // mov rbx,rcx
      {{0x48, 0x85, 0xC9}, 3, false},                               // test rcx,rcx
      {{0x48, 0x83, 0xF9, 0xE0}, 4, false},                         // cmp rcx,-20h
      {{0x33, 0xD2}, 2, false},                                     // xor edx,edx
      {{0x48, 0x33, 0xC4}, 3, false},                               // xor rax,rsp (cookie)
      {{0x48, 0x89, 0x44, 0x24, 0x38}, 5, false},                   // mov [rsp+38h],rax
      {{0x48, 0x8B, 0x05, 0x11, 0x22, 0x33, 0x00}, 7, true},        // mov rax,[rip+d]
      {{0x48, 0x8B, 0x0D, 0x11, 0x22, 0x33, 0x00}, 7, true},        // mov rcx,[rip+d] (heap handle)
      {{0x48, 0x8D, 0x0D, 0x11, 0x22, 0x33, 0x00}, 7, true},        // lea rcx,[rip+d]
      {{0x48, 0x83, 0x3D, 0x11, 0x22, 0x33, 0x00, 0x00}, 8, true},  // cmp qword [rip+d],0
      {{0xF6, 0x05, 0x11, 0x22, 0x33, 0x00, 0x01}, 7, true},        // test byte [rip+d],1
      {{0x83, 0x3D, 0x11, 0x22, 0x33, 0x00, 0x05}, 7, true},        // cmp dword [rip+d],5
      {{0xC7, 0x05, 0x11, 0x22, 0x33, 0x00, 1, 0, 0, 0}, 10, true},       // mov dword [rip+d],1
      {{0x66, 0x0F, 0x6F, 0x05, 0x11, 0x22, 0x33, 0x00}, 8, true},        // movdqa xmm0,[rip+d]
      {{0xF2, 0x0F, 0x10, 0x05, 0x11, 0x22, 0x33, 0x00}, 8, true},        // movsd xmm0,[rip+d]
      {{0xC5, 0xFA, 0x6F, 0x05, 0x11, 0x22, 0x33, 0x00}, 8, true},        // vmovdqu xmm0,[rip+d]
      {{0xC4, 0xE2, 0x79, 0x18, 0x05, 0x11, 0x22, 0x33, 0x00}, 9, true},  // vbroadcastss
      {{0xC5, 0xF8, 0x77}, 3, false},                                     // vzeroupper
      {{0x65, 0x48, 0x8B, 0x04, 0x25, 0x30, 0, 0, 0}, 9, false},  // mov rax,gs:[30h] (no RIP)
      {{0x65, 0x48, 0x8B, 0x04, 0x25, 0x58, 0, 0, 0}, 9, false},  // mov rax,gs:[58h] (TLS array)
      {{0x8B, 0xFF}, 2, false},                             // mov edi,edi (x86 hot-patch idiom)
      {{0x48, 0x8B, 0xFF}, 3, false},                       // mov rdi,rdi
      {{0x66, 0x90}, 2, false},                             // xchg ax,ax (2-byte nop)
      {{0x90}, 1, false},                                   // nop
      {{0x0F, 0x1F, 0x44, 0x00, 0x00}, 5, false},           // nop dword [rax+rax]
      {{0x0F, 0x1F, 0x80, 0, 0, 0, 0}, 7, false},           // nop dword [rax+0]
      {{0x66, 0x0F, 0x1F, 0x84, 0, 0, 0, 0, 0}, 9, false},  // nop word [rax+rax+0]
      {{0x66, 0x2E, 0x0F, 0x1F, 0x84, 0, 0, 0, 0, 0}, 10, false},  // cs nop word
      {{0x48, 0xB8, 1, 2, 3, 4, 5, 6, 7, 8}, 10, false},           // mov rax,imm64
      {{0xB8, 1, 2, 3, 4}, 5, false},                              // mov eax,imm32
      {{0x66, 0xB8, 1, 2}, 4, false},                              // mov ax,imm16
      {{0x48, 0xA1, 1, 2, 3, 4, 5, 6, 7, 8}, 10, false},           // mov rax,[moffs64]
      {{0xF7, 0xC1, 1, 0, 0, 0}, 6, false},                        // test ecx,1
      {{0xF7, 0xD8}, 2, false},                                    // neg eax
      {{0xF6, 0xC1, 0x01}, 3, false},                              // test cl,1
      {{0xC8, 0x10, 0x00, 0x00}, 4, false},                        // enter 10h,0
      {{0xF3, 0x48, 0xAB}, 3, false},                              // rep stosq
      {{0x0F, 0xB6, 0xC1}, 3, false},                              // movzx eax,cl
      {{0x0F, 0xBA, 0xE0, 0x03}, 4, false},                        // bt eax,3
      {{0x66, 0x0F, 0x3A, 0x0F, 0xC1, 0x08}, 6, false},            // palignr xmm0,xmm1,8
      {{0x66, 0x0F, 0x38, 0x00, 0xC1}, 5, false},                  // pshufb xmm0,xmm1
      {{0xF0, 0x48, 0x0F, 0xB1, 0x0A}, 5, false},                  // lock cmpxchg [rdx],rcx
      {{0xC2, 0x08, 0x00}, 3, false},                              // ret 8
      {{0xC3}, 1, false},                                          // ret
  };
  for (const Case& c : cases) {
    Bytes b = c.bytes;
    b.resize(b.size() + 16, 0xCC);
    INFO("first bytes " << int(c.bytes[0]) << " " << int(c.bytes.size() > 1 ? c.bytes[1] : 0)
                        << " expected length " << c.length);
    const Instruction insn = dec(b);
    CHECK(insn.length == c.length);
    CHECK(insn.rip_relative == c.rip);
    CHECK(insn.branch == BranchKind::kNone);
  }
}

TEST_CASE("branches are classified", "[decoder]") {
  Instruction i = dec(code({0x74, 0x37}));  // je +37h
  CHECK(i.length == 2);
  CHECK(i.branch == BranchKind::kJcc);
  CHECK(i.condition == 4);
  CHECK(!i.ends_flow);
  CHECK(granule::win::branch_target(code({0x74, 0x37}).data(), kSrc, i) == kSrc + 2 + 0x37);

  i = dec(code({0x75, 0xF0}));  // jne -10h
  CHECK(i.condition == 5);
  CHECK(granule::win::branch_target(code({0x75, 0xF0}).data(), kSrc, i) == kSrc + 2 - 0x10);

  i = dec(code({0x0F, 0x84, 0x00, 0x01, 0x00, 0x00}));  // je rel32
  CHECK(i.length == 6);
  CHECK(i.branch == BranchKind::kJcc);
  CHECK(i.rel_size == 4);

  i = dec(code({0xE9, 0x10, 0x00, 0x00, 0x00}));
  CHECK(i.branch == BranchKind::kJmp);
  CHECK(i.ends_flow);
  i = dec(code({0xEB, 0x05}));
  CHECK(i.branch == BranchKind::kJmp);
  CHECK(i.length == 2);
  i = dec(code({0xE8, 0x10, 0x00, 0x00, 0x00}));
  CHECK(i.branch == BranchKind::kCall);
  CHECK(!i.ends_flow);

  i = dec(code({0xFF, 0x25, 0x00, 0x10, 0x00, 0x00}));  // jmp [rip+1000h]: import thunk
  CHECK(i.length == 6);
  CHECK(i.rip_relative);
  CHECK(i.ends_flow);
  i = dec(code({0x48, 0xFF, 0x25, 0x00, 0x10, 0x00, 0x00}));  // rex.W jmp [rip+...]
  CHECK(i.length == 7);
  CHECK(i.ends_flow);
  i = dec(code({0xFF, 0x15, 0x00, 0x10, 0x00, 0x00}));  // call [rip+...] (HeapFree)
  CHECK(i.rip_relative);
  CHECK(!i.ends_flow);

  i = dec(code({0xE3, 0x05}));  // jrcxz
  CHECK(i.branch == BranchKind::kLoop);
  i = dec(code({0x0F, 0x0B}));  // ud2
  CHECK(i.ends_flow);
}

TEST_CASE("encodings the decoder refuses", "[decoder]") {
  Instruction insn;
  const Bytes invalid[] = {
      code({0x06}),                                // push es: invalid in 64-bit mode
      code({0x62, 0xF1, 0x7C, 0x48, 0x10, 0x00}),  // EVEX
      code({0x0F, 0x0F, 0xC1, 0xB4}),              // 3DNow!
      code({0x66, 0xE9, 0x00, 0x00}),              // 16-bit jmp
  };
  for (const Bytes& b : invalid) CHECK(!decode(b.data(), b.size(), &insn));
  const uint8_t truncated[] = {0x48, 0x8B, 0x05, 0x00, 0x00};
  CHECK(!decode(truncated, sizeof truncated, &insn));
  const uint8_t prefix_only[] = {0x66, 0x48};
  CHECK(!decode(prefix_only, sizeof prefix_only, &insn));
}

TEST_CASE("plain prologues are copied whole, then a jump back", "[relocate]") {
  // mov [rsp+8],rbx / push rdi
  Relocated x = run(code({0x48, 0x89, 0x5C, 0x24, 0x08, 0x57}), kNear);
  REQUIRE(x.r.status == RelocateStatus::kOk);
  CHECK(x.r.copied == 5);
  CHECK(x.r.written == 5 + 14);
  CHECK(std::memcmp(x.out, "\x48\x89\x5C\x24\x08", 5) == 0);
  check_jump_back(x);

  // push rbx (REX) / sub rsp,20h: 6 bytes cover the patch
  x = run(code({0x40, 0x53, 0x48, 0x83, 0xEC, 0x20, 0x48, 0x8B, 0xD9}), kFar);
  REQUIRE(x.r.status == RelocateStatus::kOk);
  CHECK(x.r.copied == 6);
  check_jump_back(x);

  // hot-patch nop / mov rax,rsp / mov [rax+8],rbx
  x = run(code({0x66, 0x90, 0x48, 0x8B, 0xC4, 0x48, 0x89, 0x58, 0x08}), kNear);
  REQUIRE(x.r.status == RelocateStatus::kOk);
  CHECK(x.r.copied == 5);
  check_jump_back(x);

  // mov r11,rsp / mov [r11+8],rbx
  x = run(code({0x4C, 0x8B, 0xDC, 0x49, 0x89, 0x5B, 0x08}), kNear);
  REQUIRE(x.r.status == RelocateStatus::kOk);
  CHECK(x.r.copied == 7);
  check_jump_back(x);
}

TEST_CASE("RIP-relative operands keep pointing at the same data", "[relocate]") {
  // sub rsp,28h / mov rax,[rip+12345h]: data at kSrc + 4 + 7 + 0x12345
  Relocated x =
      run(code({0x48, 0x83, 0xEC, 0x28, 0x48, 0x8B, 0x05, 0x45, 0x23, 0x01, 0x00}), kNear);
  REQUIRE(x.r.status == RelocateStatus::kOk);
  CHECK(x.r.copied == 11);
  Instruction insn;
  REQUIRE(decode(x.out + 4, 16, &insn));
  CHECK(insn.rip_relative);
  CHECK(granule::win::rip_target(x.out + 4, kNear + 4, insn) == kSrc + 11 + 0x12345);
  check_jump_back(x);

  // lea rcx,[rip-100h] first
  x = run(code({0x48, 0x8D, 0x0D, 0x00, 0xFF, 0xFF, 0xFF}), kNear);
  REQUIRE(x.r.status == RelocateStatus::kOk);
  REQUIRE(decode(x.out, 16, &insn));
  CHECK(granule::win::rip_target(x.out, kNear, insn) == kSrc + 7 - 0x100);

  // cmp qword [rip+d],0: the immediate after the displacement counts
  x = run(code({0x48, 0x83, 0x3D, 0x00, 0x10, 0x00, 0x00, 0x00}), kNear);
  REQUIRE(x.r.status == RelocateStatus::kOk);
  REQUIRE(decode(x.out, 16, &insn));
  CHECK(insn.length == 8);
  CHECK(granule::win::rip_target(x.out, kNear, insn) == kSrc + 8 + 0x1000);

  // Out of reach from a far trampoline: refused, never silently wrong.
  x = run(code({0x48, 0x8B, 0x05, 0x45, 0x23, 0x01, 0x00}), kFar);
  CHECK(x.r.status == RelocateStatus::kOutOfRange);
}

TEST_CASE("a null test and jcc rel8 in the first bytes (free-like entry)", "[relocate]") {
  // test rcx,rcx / je +37h / push rbx / sub rsp,20h
  const Bytes f = code({0x48, 0x85, 0xC9, 0x74, 0x37, 0x53, 0x48, 0x83, 0xEC, 0x20});
  const uint64_t target = kSrc + 5 + 0x37;

  Relocated x = run(f, kNear);  // rel32 reaches: je rel32
  REQUIRE(x.r.status == RelocateStatus::kOk);
  CHECK(x.r.copied == 5);
  CHECK(std::memcmp(x.out, "\x48\x85\xC9", 3) == 0);
  Instruction insn;
  REQUIRE(decode(x.out + 3, 16, &insn));
  CHECK(insn.branch == BranchKind::kJcc);
  CHECK(insn.condition == 4);
  CHECK(insn.length == 6);
  CHECK(granule::win::branch_target(x.out + 3, kNear + 3, insn) == target);
  CHECK(x.r.written == 3 + 6 + 14);
  check_jump_back(x);

  x = run(f, kFar);  // too far: jne over an absolute jump
  REQUIRE(x.r.status == RelocateStatus::kOk);
  CHECK(x.out[3] == 0x75);  // inverted condition
  CHECK(x.out[4] == 14);
  CHECK(x.out[5] == 0xFF);
  CHECK(x.out[6] == 0x25);
  CHECK(i32_at(x.out + 7) == 0);
  CHECK(u64_at(x.out + 11) == target);
  CHECK(x.r.written == 3 + 16 + 14);
  check_jump_back(x);

  // jne rel8 first: cmp rcx,-20h comes later
  x = run(code({0x75, 0x10, 0x48, 0x83, 0xF9, 0xE0}), kFar);
  REQUIRE(x.r.status == RelocateStatus::kOk);
  CHECK(x.out[0] == 0x74);
  CHECK(u64_at(x.out + 8) == kSrc + 2 + 0x10);
  CHECK(x.r.copied == 6);
}

TEST_CASE("jmp and call at the entry", "[relocate]") {
  // jmp rel32 (ucrtbase!malloc -> _malloc_base style): nothing follows it
  const Bytes jmp = code({0xE9, 0x00, 0x10, 0x00, 0x00});
  Relocated x = run(jmp, kNear);
  REQUIRE(x.r.status == RelocateStatus::kOk);
  CHECK(x.r.written == 5);
  Instruction insn;
  REQUIRE(decode(x.out, 16, &insn));
  CHECK(granule::win::branch_target(x.out, kNear, insn) == kSrc + 5 + 0x1000);
  x = run(jmp, kFar);
  REQUIRE(x.r.status == RelocateStatus::kOk);
  CHECK(x.r.written == 14);
  CHECK(u64_at(x.out + 6) == kSrc + 5 + 0x1000);

  // jmp [rip+d]: an import thunk, relocated as a RIP-relative operand
  x = run(code({0xFF, 0x25, 0x00, 0x20, 0x00, 0x00}), kNear);
  REQUIRE(x.r.status == RelocateStatus::kOk);
  CHECK(x.r.copied == 6);
  CHECK(x.r.written == 6);
  REQUIRE(decode(x.out, 16, &insn));
  CHECK(granule::win::rip_target(x.out, kNear, insn) == kSrc + 6 + 0x2000);

  // call rel32 first
  const Bytes call = code({0xE8, 0x00, 0x01, 0x00, 0x00, 0x48, 0x01, 0xC8});
  x = run(call, kNear);
  REQUIRE(x.r.status == RelocateStatus::kOk);
  REQUIRE(decode(x.out, 16, &insn));
  CHECK(insn.branch == BranchKind::kCall);
  CHECK(granule::win::branch_target(x.out, kNear, insn) == kSrc + 5 + 0x100);
  check_jump_back(x);
  x = run(call, kFar);  // call [rip+2] / jmp +8 / abs64
  REQUIRE(x.r.status == RelocateStatus::kOk);
  CHECK(std::memcmp(x.out, "\xFF\x15\x02\x00\x00\x00\xEB\x08", 8) == 0);
  CHECK(u64_at(x.out + 8) == kSrc + 5 + 0x100);
  CHECK(x.r.written == 16 + 14);
  check_jump_back(x);

  // jmp rel8 to a far-away trampoline
  x = run(code({0xEB, 0x40}), kFar);
  REQUIRE(x.r.status == RelocateStatus::kOk);
  CHECK(u64_at(x.out + 6) == kSrc + 2 + 0x40);
}

TEST_CASE("what can't be relocated is reported", "[relocate]") {
  // A branch back into the bytes the patch will overwrite.
  Relocated x = run(code({0x48, 0x85, 0xC9, 0x74, 0xFB}), kNear);
  CHECK(x.r.status == RelocateStatus::kBranchIntoPatch);
  // A 3-byte function followed by another one.
  x = run(Bytes{0x33, 0xC0, 0xC3, 0x48, 0x8B, 0xC4, 0xC3}, kNear);
  CHECK(x.r.status == RelocateStatus::kTooShort);
  // The same followed by int3 padding is fine: nothing to jump back to.
  x = run(Bytes{0x33, 0xC0, 0xC3, 0xCC, 0xCC, 0xCC, 0xCC}, kNear);
  REQUIRE(x.r.status == RelocateStatus::kOk);
  CHECK(x.r.copied == 3);
  CHECK(x.r.written == 3);
  // jrcxz in the first bytes.
  x = run(code({0xE3, 0x05, 0x48, 0x8B, 0xC4}), kNear);
  CHECK(x.r.status == RelocateStatus::kUnsupported);
  // Undecodable.
  x = run(code({0x06, 0x90, 0x90, 0x90, 0x90}), kNear);
  CHECK(x.r.status == RelocateStatus::kDecodeFailed);
  // Output too small.
  x = run(code({0x48, 0x89, 0x5C, 0x24, 0x08}), kNear, 10);
  CHECK(x.r.status == RelocateStatus::kNoSpace);
}

TEST_CASE("Wine 8's own runtime entries", "[relocate][wine]") {
  // What GetProcAddress gives under Wine 8 (mingw-built msvcrt/ucrtbase):
  // free/realloc/calloc start with an 8-byte hot-patch no-op.
  const Bytes free_entry = code({0x48, 0x8D, 0xA4, 0x24, 0, 0, 0, 0, 0x48, 0x83, 0xEC, 0x28});
  CHECK(dec(free_entry).length == 8);  // lea rsp,[rsp+0]
  Relocated x = run(free_entry, kNear);
  REQUIRE(x.r.status == RelocateStatus::kOk);
  CHECK(x.r.copied == 8);
  check_jump_back(x);
  // malloc: push rsi / push rbx / sub rsp,28h
  x = run(code({0x56, 0x53, 0x48, 0x83, 0xEC, 0x28, 0x48, 0x89, 0xCE}), kNear);
  REQUIRE(x.r.status == RelocateStatus::kOk);
  CHECK(x.r.copied == 6);
  // ucrtbase _malloc_base: sub rsp,28h / call rel32 (-69h)
  const Bytes malloc_base = code({0x48, 0x83, 0xEC, 0x28, 0xE8, 0x97, 0xFF, 0xFF, 0xFF});
  x = run(malloc_base, kNear);
  REQUIRE(x.r.status == RelocateStatus::kOk);
  CHECK(x.r.copied == 9);
  Instruction insn;
  REQUIRE(decode(x.out + 4, 16, &insn));
  CHECK(insn.branch == BranchKind::kCall);
  CHECK(granule::win::branch_target(x.out + 4, kNear + 4, insn) == kSrc + 9 - 0x69);
  check_jump_back(x);
}
