// Loads crt-free-probe.dll (built with -nostdlib), checks from its import
// directory that it needs KERNEL32.dll only, and runs the OS layer and the
// patcher inside it.
#define WIN32_LEAN_AND_MEAN
#include <windows.h>

#include <catch2/catch.hpp>

#include <cctype>
#include <cstring>
#include <string>
#include <vector>

namespace {

std::vector<std::string> imported_dlls(HMODULE m) {
  auto* base = reinterpret_cast<const uint8_t*>(m);
  auto* dos = reinterpret_cast<const IMAGE_DOS_HEADER*>(base);
  auto* nt = reinterpret_cast<const IMAGE_NT_HEADERS*>(base + dos->e_lfanew);
  const IMAGE_DATA_DIRECTORY& dir = nt->OptionalHeader.DataDirectory[IMAGE_DIRECTORY_ENTRY_IMPORT];
  std::vector<std::string> names;
  if (dir.VirtualAddress == 0) return names;
  for (auto* d = reinterpret_cast<const IMAGE_IMPORT_DESCRIPTOR*>(base + dir.VirtualAddress);
       d->Name; ++d) {
    std::string name(reinterpret_cast<const char*>(base + d->Name));
    for (char& c : name) c = char(std::toupper(static_cast<unsigned char>(c)));
    names.push_back(name);
  }
  return names;
}

}  // namespace

// A function for the DLL to patch: the hot-patch nop makes 6 bytes to relocate.
extern "C" int crt_free_target(int);
__asm__(R"(
  .intel_syntax noprefix
  .text
  .p2align 4, 0xCC
  .globl crt_free_target
crt_free_target:
  .byte 0x66, 0x90
  lea eax, [rcx + 1]
  ret
  .att_syntax prefix
)");

TEST_CASE("a CRT-free DLL runs the OS layer and the patcher", "[windows][dll]") {
  HMODULE dll = LoadLibraryW(L"crt-free-probe.dll");
  REQUIRE(dll);
  const std::vector<std::string> dlls = imported_dlls(dll);
  REQUIRE(dlls.size() == 1);
  CHECK(dlls[0] == "KERNEL32.DLL");
  using RunFn = int (*)(int (*)(int));
  auto run =
      reinterpret_cast<RunFn>(reinterpret_cast<void*>(GetProcAddress(dll, "crt_free_probe_run")));
  REQUIRE(run);
  SetEnvironmentVariableW(L"GRANULE_CRT_FREE_PROBE", L"1");
  CHECK(run(&crt_free_target) == 0);
}
