// Drives granule-run.exe: test-win-injector GRANULE_RUN PROBE_DLL TARGET
// Checks that the probe DLL is in the target before its static constructors,
// that arguments and the exit code pass through, and that failures are
// reported with a non-zero exit code.
#define WIN32_LEAN_AND_MEAN
#include <windows.h>

#include <cstdio>
#include <cwchar>

namespace {

int g_failures = 0;

// Run a command line, return the exit code (or -1 if it could not start).
long run(const wchar_t* command_line) {
  static wchar_t buffer[8192];
  std::wcsncpy(buffer, command_line, 8191);
  STARTUPINFOW si = {};
  si.cb = sizeof si;
  PROCESS_INFORMATION pi = {};
  if (!CreateProcessW(nullptr, buffer, nullptr, nullptr, TRUE, 0, nullptr, nullptr, &si, &pi))
    return -1;
  WaitForSingleObject(pi.hProcess, INFINITE);
  DWORD code = 0;
  GetExitCodeProcess(pi.hProcess, &code);
  CloseHandle(pi.hThread);
  CloseHandle(pi.hProcess);
  return long(code);
}

void expect(const char* what, long got, long want) {
  std::printf("%s %s: exit code %ld (want %ld)\n", got == want ? "ok  " : "FAIL", what, got, want);
  if (got != want) ++g_failures;
}

// Full Windows path of a (possibly Unix-style, under Wine) path.
void full_path(const char* in, wchar_t* out) {
  wchar_t wide[MAX_PATH];
  MultiByteToWideChar(CP_UTF8, 0, in, -1, wide, MAX_PATH);
  GetFullPathNameW(wide, MAX_PATH, out, nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::printf("usage: test-win-injector GRANULE_RUN PROBE_DLL TARGET\n");
    return 2;
  }
  static wchar_t runner[MAX_PATH], probe[MAX_PATH], target[MAX_PATH];
  full_path(argv[1], runner);
  full_path(argv[2], probe);
  full_path(argv[3], target);
  static wchar_t cmd[8192];
  const wchar_t* args = L"plain \"with space\" quote\\\"inside \"trailing\\\\\"";

  std::swprintf(cmd, 8192, L"\"%ls\" expect-none", target);
  expect("target alone, no probe", run(cmd), 10);

  std::swprintf(cmd, 8192, L"\"%ls\" --dll \"%ls\" \"%ls\" %ls", runner, probe, target, args);
  expect("probe loaded before static constructors, args intact", run(cmd), 37);

  SetEnvironmentVariableW(L"GRANULE_DLL", probe);
  std::swprintf(cmd, 8192, L"\"%ls\" \"%ls\" %ls", runner, target, args);
  expect("DLL from GRANULE_DLL", run(cmd), 37);
  SetEnvironmentVariableW(L"GRANULE_DLL", nullptr);

  std::swprintf(cmd, 8192, L"\"%ls\" --dll \"%ls\" \"%ls\" extra", runner, probe, target);
  expect("exit code of the program passes through", run(cmd), 12);

  std::swprintf(cmd, 8192, L"\"%ls\" --dll \"%ls\" \"%ls.missing.exe\"", runner, probe, target);
  expect("missing program", run(cmd), 127);

  std::swprintf(cmd, 8192, L"\"%ls\" --dll \"%ls.missing.dll\" \"%ls\" expect-none", runner, probe,
                target);
  expect("missing DLL", run(cmd), 127);

  std::swprintf(cmd, 8192, L"\"%ls\"", runner);
  expect("no program: usage", run(cmd), 127);

  std::printf("%d failure(s)\n", g_failures);
  return g_failures == 0 ? 0 : 1;
}
