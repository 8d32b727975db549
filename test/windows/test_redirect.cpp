// Runs the target programs (test/windows/targets) with and without
// granule-run.exe and compares: same output, same exit code (7), and with
// Granule the targets' own checks that their blocks are Granule's.
// Paths come from the environment (meson test sets them):
//   GRANULE_TEST_RUN, GRANULE_TEST_DLL, GRANULE_TEST_TARGETS (';'-separated)
#include <catch2/catch.hpp>

#define WIN32_LEAN_AND_MEAN
#include <windows.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct Result {
  long code = -1;
  std::string out;
};

std::wstring widen(const std::string& s) {
  wchar_t buf[MAX_PATH];
  MultiByteToWideChar(CP_UTF8, 0, s.c_str(), -1, buf, MAX_PATH);
  wchar_t full[MAX_PATH];
  GetFullPathNameW(buf, MAX_PATH, full, nullptr);
  return full;
}

// Runs a command line with GRANULE_TEST_EXPECT set, capturing stdout (and
// stderr too when asked).
Result run(const std::wstring& command_line, const char* expect, bool with_stderr = false) {
  SetEnvironmentVariableA("GRANULE_TEST_EXPECT", expect);
  SECURITY_ATTRIBUTES sa = {sizeof sa, nullptr, TRUE};
  HANDLE read_end, write_end;
  Result r;
  if (!CreatePipe(&read_end, &write_end, &sa, 0)) return r;
  SetHandleInformation(read_end, HANDLE_FLAG_INHERIT, 0);
  STARTUPINFOW si = {};
  si.cb = sizeof si;
  si.dwFlags = STARTF_USESTDHANDLES;
  si.hStdOutput = write_end;
  si.hStdError = with_stderr ? write_end : GetStdHandle(STD_ERROR_HANDLE);
  si.hStdInput = GetStdHandle(STD_INPUT_HANDLE);
  PROCESS_INFORMATION pi = {};
  std::vector<wchar_t> buffer(command_line.begin(), command_line.end());
  buffer.push_back(0);
  const BOOL started =
      CreateProcessW(nullptr, buffer.data(), nullptr, nullptr, TRUE, 0, nullptr, nullptr, &si, &pi);
  CloseHandle(write_end);
  if (started) {
    char chunk[4096];
    DWORD got;
    while (ReadFile(read_end, chunk, sizeof chunk, &got, nullptr) && got) r.out.append(chunk, got);
    WaitForSingleObject(pi.hProcess, INFINITE);
    DWORD code = 0;
    GetExitCodeProcess(pi.hProcess, &code);
    r.code = long(code);
    CloseHandle(pi.hThread);
    CloseHandle(pi.hProcess);
  }
  CloseHandle(read_end);
  SetEnvironmentVariableA("GRANULE_TEST_EXPECT", nullptr);
  return r;
}

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

std::vector<std::string> targets() {
  std::vector<std::string> out;
  std::string all = env("GRANULE_TEST_TARGETS");
  size_t at = 0;
  while (at < all.size()) {
    size_t end = all.find(';', at);
    if (end == std::string::npos) end = all.size();
    if (end > at) out.push_back(all.substr(at, end - at));
    at = end + 1;
  }
  return out;
}

}  // namespace

TEST_CASE("targets knowing nothing of Granule: same output and exit code through granule-run.exe") {
  const std::wstring runner = widen(env("GRANULE_TEST_RUN"));
  const std::wstring dll = widen(env("GRANULE_TEST_DLL"));
  const auto list = targets();
  REQUIRE(!list.empty());
  for (const std::string& t : list) {
    const std::wstring target = widen(t);
    INFO("target " << t);
    const Result alone = run(L"\"" + target + L"\"", "0");
    INFO("alone: exit " << alone.code << "\n" << alone.out);
    REQUIRE(alone.code == 7);
    const Result with = run(L"\"" + runner + L"\" --dll \"" + dll + L"\" \"" + target + L"\"", "1");
    INFO("through granule-run: exit " << with.code << "\n" << with.out);
    CHECK(with.code == 7);
    CHECK(with.out == alone.out);
  }
}

TEST_CASE("GRANULE_DISABLE_REDIRECT=1 leaves the runtime alone") {
  const std::wstring runner = widen(env("GRANULE_TEST_RUN"));
  const std::wstring dll = widen(env("GRANULE_TEST_DLL"));
  const auto list = targets();
  REQUIRE(!list.empty());
  SetEnvironmentVariableA("GRANULE_DISABLE_REDIRECT", "1");
  // Expecting Granule's blocks must now fail (exit 1), and nothing crashes.
  const Result with =
      run(L"\"" + runner + L"\" --dll \"" + dll + L"\" \"" + widen(list[0]) + L"\"", "1");
  SetEnvironmentVariableA("GRANULE_DISABLE_REDIRECT", nullptr);
  INFO(with.out);
  CHECK(with.code == 1);
}

TEST_CASE("GRANULE_VERBOSE=1 lists what was patched") {
  const std::wstring runner = widen(env("GRANULE_TEST_RUN"));
  const std::wstring dll = widen(env("GRANULE_TEST_DLL"));
  const auto list = targets();
  REQUIRE(!list.empty());
  SetEnvironmentVariableA("GRANULE_VERBOSE", "1");
  const Result r =
      run(L"\"" + runner + L"\" --dll \"" + dll + L"\" \"" + widen(list[0]) + L"\"", "1", true);
  SetEnvironmentVariableA("GRANULE_VERBOSE", nullptr);
  INFO(r.out);
  CHECK(r.code == 7);
  CHECK(r.out.find("msvcrt.dll!malloc: patched") != std::string::npos);
  CHECK(r.out.find("msvcrt.dll!free: patched") != std::string::npos);
  CHECK(r.out.find("msvcrt.dll!_aligned_free: patched") != std::string::npos);
  CHECK(r.out.find("entry points redirected to Granule") != std::string::npos);
}

TEST_CASE("a running program loads granule.dll late, then C runtimes after it") {
  const std::wstring dll = widen(env("GRANULE_TEST_DLL"));
  const auto list = targets();
  for (const std::string& t : list) {
    INFO("target " << t);
    const Result r = run(L"\"" + widen(t) + L"\" \"" + dll + L"\"", "0");
    INFO("exit " << r.code << "\n" << r.out);
    CHECK(r.code == 7);
  }
}

// Where no trampoline can be built, crt_redirect frees and sizes foreign
// blocks with HeapFree/HeapSize on the runtime's _get_heap_handle(), and finds
// an _aligned_malloc block's base in the word before it. Check that premise
// on each runtime here.
TEST_CASE("fallback premise: runtime blocks live on _get_heap_handle()") {
  for (const char* name : {"msvcrt.dll", "ucrtbase.dll", "msvcr120.dll"}) {
    INFO(name);
    HMODULE crt = LoadLibraryA(name);
    if (!crt) continue;
    using HeapHandleFn = intptr_t (*)();
    using MallocFn = void* (*)(size_t);
    using AlignedMallocFn = void* (*)(size_t, size_t);
    auto get_heap = reinterpret_cast<HeapHandleFn>(
        reinterpret_cast<void*>(GetProcAddress(crt, "_get_heap_handle")));
    auto crt_malloc =
        reinterpret_cast<MallocFn>(reinterpret_cast<void*>(GetProcAddress(crt, "malloc")));
    auto crt_aligned = reinterpret_cast<AlignedMallocFn>(
        reinterpret_cast<void*>(GetProcAddress(crt, "_aligned_malloc")));
    REQUIRE(get_heap);
    REQUIRE(crt_malloc);
    REQUIRE(crt_aligned);
    HANDLE heap = reinterpret_cast<HANDLE>(get_heap());
    void* p = crt_malloc(100);
    CHECK(HeapSize(heap, 0, p) >= 100);
    CHECK(HeapSize(heap, 0, p) != SIZE_T(-1));
    CHECK(HeapFree(heap, 0, p));
    void* a = crt_aligned(100, 64);
    void* base;
    std::memcpy(&base,
                reinterpret_cast<void*>((uintptr_t(a) - sizeof(void*)) & ~(sizeof(void*) - 1)),
                sizeof base);
    CHECK(base <= a);
    CHECK(HeapSize(heap, 0, base) >=
          100 + size_t(static_cast<char*>(a) - static_cast<char*>(base)));
    CHECK(HeapFree(heap, 0, base));
  }
}
