// The program granule-run.exe starts in the injector test. A static
// constructor records whether the probe DLL was already loaded; the exit code
// reports it, and the arguments arrive unchanged:
//   37  probe loaded before static constructors, arguments as expected
//   10  probe not loaded       11  probe loaded only after the constructors
//   12  arguments differ
#define WIN32_LEAN_AND_MEAN
#include <windows.h>

#include <cstdio>
#include <cstring>

namespace {
bool probe_seen(const wchar_t* name) {
  wchar_t v[8];
  return GetEnvironmentVariableW(name, v, 8) > 0;
}

struct Early {
  bool probe = probe_seen(L"GRANULE_PROBE_LOADED");
} g_early;
}  // namespace

int main(int argc, char** argv) {
  const char* expected[] = {"plain", "with space", "quote\"inside", "trailing\\"};
  std::printf("inject-target: probe at static init: %s\n", g_early.probe ? "yes" : "no");
  if (argc == 2 && std::strcmp(argv[1], "expect-none") == 0) return g_early.probe ? 13 : 10;
  if (argc != 5) return 12;
  for (int i = 0; i < 4; ++i) {
    if (std::strcmp(argv[1 + i], expected[i]) != 0) {
      std::printf("inject-target: argv[%d] = [%s]\n", 1 + i, argv[1 + i]);
      return 12;
    }
  }
  if (!g_early.probe) return probe_seen(L"GRANULE_PROBE_LOADED") ? 11 : 10;
  if (!GetModuleHandleW(L"inject-probe.dll")) return 10;
  return 37;
}
