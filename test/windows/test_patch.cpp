// Patching under Wine: functions with known prologues (written in assembly
// below, so the bytes are exact) are redirected and their originals called
// through the trampolines; then msvcrt's own malloc/free, which the C runtime
// also calls internally (_strdup).
#define WIN32_LEAN_AND_MEAN
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>

#include <catch2/catch.hpp>

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "patch.h"

using granule::win::patch_function;
using granule::win::PatchStatus;

// Fixtures, Windows x64 ABI (argument in rcx, result in rax).
extern "C" {
long long fx_hotpatch(long long);  // 66 90 | lea rax,[rcx+1] ; x + 1
long long fx_jcc(long long);       // test rcx,rcx | je rel8 ; x ? x + 5 : fx_value
long long fx_rip(long long);       // mov rax,[rip+fx_value] ; fx_value + x
long long fx_call(long long);      // call rel32 fx_seven ; 7 + x
long long fx_tiny_padded(long long);
long long fx_tiny_then_code(long long);
long long fx_bad(long long);
long long fx_jrcxz(long long);
extern long long fx_value;
}

__asm__(R"(
  .intel_syntax noprefix
  .data
  .p2align 3
  .globl fx_value
fx_value:
  .quad 1000
  .text
  .p2align 4, 0xCC
  .globl fx_hotpatch
fx_hotpatch:
  .byte 0x66, 0x90
  lea rax, [rcx + 1]
  ret
  .p2align 4, 0xCC
  .globl fx_jcc
fx_jcc:
  test rcx, rcx
  je 1f
  lea rax, [rcx + 5]
  ret
1:
  mov rax, qword ptr [rip + fx_value]
  ret
  .p2align 4, 0xCC
  .globl fx_rip
fx_rip:
  mov rax, qword ptr [rip + fx_value]
  add rax, rcx
  ret
  .p2align 4, 0xCC
fx_seven:
  mov eax, 7
  ret
  .p2align 4, 0xCC
  .globl fx_call
fx_call:
  call fx_seven
  add rax, rcx
  ret
  .p2align 4, 0xCC
  .globl fx_tiny_padded
fx_tiny_padded:
  xor eax, eax
  ret
  .byte 0xCC, 0xCC, 0xCC, 0xCC
  .p2align 4, 0xCC
  .globl fx_tiny_then_code
fx_tiny_then_code:
  xor eax, eax
  ret
fx_after_tiny:
  mov eax, 3
  ret
  .p2align 4, 0xCC
  .globl fx_bad
fx_bad:
  .byte 0x06, 0x90, 0x90, 0x90, 0x90, 0xC3
  .p2align 4, 0xCC
  .globl fx_jrcxz
fx_jrcxz:
  jrcxz 2f
  mov rax, rcx
  ret
2:
  xor eax, eax
  ret
  .att_syntax prefix
)");

namespace {

using Fn = long long (*)(long long);

// Call through a volatile pointer so the compiler can't fold the fixture.
long long call(Fn f, long long x) {
  Fn volatile g = f;
  return g(x);
}

extern "C" long long negate(long long x) { return -x; }

Fn g_orig = nullptr;
extern "C" long long double_original(long long x) { return 2 * g_orig(x); }

}  // namespace

TEST_CASE("fixtures have the intended first bytes", "[patch]") {
  const auto* j = reinterpret_cast<const uint8_t*>(&fx_jcc);
  CHECK(std::memcmp(j, "\x48\x85\xC9\x74", 4) == 0);  // test rcx,rcx / je rel8
  const auto* r = reinterpret_cast<const uint8_t*>(&fx_rip);
  CHECK(std::memcmp(r, "\x48\x8B\x05", 3) == 0);
  CHECK(*reinterpret_cast<const uint8_t*>(&fx_call) == 0xE8);
  CHECK(call(fx_jcc, 0) == 1000);
  CHECK(call(fx_jcc, 3) == 8);
}

TEST_CASE("patched functions reach the replacement; trampolines the original", "[patch]") {
  struct Case {
    Fn fn;
    long long arg, before;
  };
  const Case cases[] = {
      {fx_hotpatch, 41, 42}, {fx_jcc, 3, 8},         {fx_rip, 5, 1005},
      {fx_call, 10, 17},     {fx_tiny_padded, 9, 0},
  };
  for (const Case& c : cases) {
    REQUIRE(call(c.fn, c.arg) == c.before);
    void* original = nullptr;
    const PatchStatus s =
        patch_function(reinterpret_cast<void*>(c.fn), reinterpret_cast<void*>(&negate), &original);
    INFO("status: " << granule::win::patch_status_text(s));
    REQUIRE(s == PatchStatus::kOk);
    REQUIRE(original);
    CHECK(*reinterpret_cast<const uint8_t*>(c.fn) == 0xE9);
    CHECK(call(c.fn, c.arg) == -c.arg);
    CHECK(call(reinterpret_cast<Fn>(original), c.arg) == c.before);
  }
  // The branch taken inside the relocated jcc, and the RIP-relative load after it.
  // (fx_jcc is patched now: its trampoline is the original.)
}

TEST_CASE("the relocated jcc takes both ways", "[patch]") {
  // A fresh copy of fx_jcc's behaviour through a second patch on the chain:
  // patching an already patched function relocates its E9 into the relay.
  void* original = nullptr;
  REQUIRE(patch_function(reinterpret_cast<void*>(fx_jcc), reinterpret_cast<void*>(&double_original),
                         &original) == PatchStatus::kOk);
  g_orig = reinterpret_cast<Fn>(original);  // -> previous replacement (negate)
  CHECK(call(fx_jcc, 4) == -8);
}

TEST_CASE("patch failures are reported, the function left intact", "[patch]") {
  struct Case {
    Fn fn;
    PatchStatus expected;
  };
  const Case cases[] = {
      {fx_tiny_then_code, PatchStatus::kTooShort},
      {fx_bad, PatchStatus::kDecodeFailed},
      {fx_jrcxz, PatchStatus::kUnsupported},
  };
  for (const Case& c : cases) {
    uint8_t before[8];
    std::memcpy(before, reinterpret_cast<const void*>(c.fn), 8);
    void* original = nullptr;
    const PatchStatus s =
        patch_function(reinterpret_cast<void*>(c.fn), reinterpret_cast<void*>(&negate), &original);
    CHECK(s == c.expected);
    CHECK(std::strlen(granule::win::patch_status_text(s)) > 0);
    CHECK(std::memcmp(before, reinterpret_cast<const void*>(c.fn), 8) == 0);
    CHECK(original == nullptr);
  }
  CHECK(call(fx_tiny_then_code, 1) == 0);
  CHECK(call(fx_jrcxz, 6) == 6);
  CHECK(patch_function(nullptr, reinterpret_cast<void*>(&negate), nullptr) ==
        PatchStatus::kNullArgument);
}

// ---- msvcrt's malloc/free, the way granule.dll will patch them ----
namespace {
using MallocFn = void* (*)(size_t);
using FreeFn = void (*)(void*);
MallocFn g_malloc_orig = nullptr;
FreeFn g_free_orig = nullptr;
std::atomic<long> g_mallocs{0};
std::atomic<long> g_frees{0};

void* counting_malloc(size_t n) {
  g_mallocs.fetch_add(1, std::memory_order_relaxed);
  return g_malloc_orig(n);
}
void counting_free(void* p) {
  g_frees.fetch_add(1, std::memory_order_relaxed);
  g_free_orig(p);
}
}  // namespace

TEST_CASE("msvcrt malloc/free patched: the runtime's own calls come through", "[patch][crt]") {
  HMODULE crt = GetModuleHandleW(L"msvcrt.dll");
  REQUIRE(crt);
  void* m = reinterpret_cast<void*>(GetProcAddress(crt, "malloc"));
  void* f = reinterpret_cast<void*>(GetProcAddress(crt, "free"));
  REQUIRE(m);
  REQUIRE(f);
  m = granule::win::skip_jumps(m);
  f = granule::win::skip_jumps(f);
  // The original pointer must be in place before the jump is: the very next
  // malloc (Catch2's INFO, say) already goes through the replacement.
  PatchStatus s = patch_function(m, reinterpret_cast<void*>(&counting_malloc),
                                 reinterpret_cast<void**>(&g_malloc_orig));
  INFO("malloc: " << granule::win::patch_status_text(s));
  REQUIRE(s == PatchStatus::kOk);
  s = patch_function(f, reinterpret_cast<void*>(&counting_free),
                     reinterpret_cast<void**>(&g_free_orig));
  INFO("free: " << granule::win::patch_status_text(s));
  REQUIRE(s == PatchStatus::kOk);

  const long m0 = g_mallocs.load(), f0 = g_frees.load();
  char* volatile dup = _strdup("granule");  // malloc inside the runtime
  REQUIRE(dup);
  CHECK(std::strcmp(dup, "granule") == 0);
  CHECK(g_mallocs.load() > m0);
  free(dup);
  CHECK(g_frees.load() > f0);
  void* volatile p = std::malloc(100);
  CHECK(g_mallocs.load() > m0 + 1);
  std::free(p);
}

// ucrtbase's _malloc_base under Wine 8 starts `sub rsp,28h / call rel32`: the
// trampoline must carry a relocated call.
namespace {
MallocFn g_malloc_base_orig = nullptr;
std::atomic<long> g_malloc_base_calls{0};
void* counting_malloc_base(size_t n) {
  g_malloc_base_calls.fetch_add(1, std::memory_order_relaxed);
  return g_malloc_base_orig(n);
}
}  // namespace

TEST_CASE("ucrtbase _malloc_base: a call in the relocated bytes", "[patch][crt]") {
  HMODULE ucrt = LoadLibraryW(L"ucrtbase.dll");
  if (!ucrt) {
    WARN("no ucrtbase.dll here");
    return;
  }
  auto entry = reinterpret_cast<MallocFn>(GetProcAddress(ucrt, "_malloc_base"));
  auto ufree = reinterpret_cast<FreeFn>(GetProcAddress(ucrt, "_free_base"));
  REQUIRE(entry);
  REQUIRE(ufree);
  void* target = granule::win::skip_jumps(reinterpret_cast<void*>(entry));
  const PatchStatus s = patch_function(target, reinterpret_cast<void*>(&counting_malloc_base),
                                       reinterpret_cast<void**>(&g_malloc_base_orig));
  INFO("status: " << granule::win::patch_status_text(s));
  REQUIRE(s == PatchStatus::kOk);
  void* p = entry(48);
  CHECK(g_malloc_base_calls.load() == 1);
  REQUIRE(p);
  std::memset(p, 0x11, 48);
  ufree(p);
}
