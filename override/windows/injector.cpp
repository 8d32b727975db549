// granule-run.exe [--dll PATH] PROGRAM [ARGS...]
//
// The Windows counterpart of LD_PRELOAD: start PROGRAM suspended, load the
// DLL into it (LoadLibraryW on a remote thread) before its main and its static
// constructors run, resume it, wait, and exit with its exit code.
// The DLL defaults to granule.dll beside granule-run.exe; GRANULE_DLL or
// --dll overrides it. PROGRAM and ARGS are passed on exactly as typed.
#define WIN32_LEAN_AND_MEAN
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>

#include <cwchar>

namespace {

constexpr DWORD kLaunchFailed = 127;

void say(const wchar_t* what, const wchar_t* detail = nullptr, DWORD error = 0) {
  wchar_t msg[2048];
  if (error) {
    wchar_t sys[512] = L"";
    FormatMessageW(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, nullptr, error, 0,
                   sys, 512, nullptr);
    swprintf(msg, 2048, L"granule-run: %ls%ls%ls (error %lu: %ls)\n", what, detail ? L" " : L"",
             detail ? detail : L"", error, sys);
  } else {
    swprintf(msg, 2048, L"granule-run: %ls%ls%ls\n", what, detail ? L" " : L"",
             detail ? detail : L"");
  }
  // UTF-8 to the console or a pipe alike.
  char out[4096];
  int n = WideCharToMultiByte(CP_UTF8, 0, msg, -1, out, sizeof out, nullptr, nullptr);
  DWORD written;
  if (n > 1) WriteFile(GetStdHandle(STD_ERROR_HANDLE), out, DWORD(n - 1), &written, nullptr);
}

// Skip one argument of a command line, following the rules of the Microsoft
// C runtime's argument parser (quotes group, backslashes escape quotes only).
// `first` selects the simpler rule for argv[0].
const wchar_t* skip_argument(const wchar_t* p, bool first) {
  while (*p == L' ' || *p == L'\t') ++p;
  if (first) {
    if (*p == L'"') {
      ++p;
      while (*p && *p != L'"') ++p;
      if (*p) ++p;
    } else {
      while (*p && *p != L' ' && *p != L'\t') ++p;
    }
  } else {
    bool quoted = false;
    while (*p && (quoted || (*p != L' ' && *p != L'\t'))) {
      if (*p == L'\\') {
        size_t slashes = 0;
        while (*p == L'\\') ++p, ++slashes;
        if (*p == L'"' && slashes % 2 == 1) ++p;  // escaped quote
        continue;
      }
      if (*p == L'"') {
        if (quoted && p[1] == L'"') {
          p += 2;  // "" inside quotes: a literal quote
          continue;
        }
        quoted = !quoted;
      }
      ++p;
    }
  }
  while (*p == L' ' || *p == L'\t') ++p;
  return p;
}

// Decode one argument (for our own options) into out.
const wchar_t* take_argument(const wchar_t* p, wchar_t* out, size_t cap) {
  const wchar_t* end = skip_argument(p, false);
  size_t n = 0;
  bool quoted = false;
  while (*p == L' ' || *p == L'\t') ++p;
  while (p < end && (quoted || (*p != L' ' && *p != L'\t'))) {
    if (*p == L'\\') {
      size_t slashes = 0;
      while (*p == L'\\') ++p, ++slashes;
      if (*p == L'"') {
        for (size_t i = 0; i < slashes / 2 && n + 1 < cap; ++i) out[n++] = L'\\';
        if (slashes % 2 == 1) {
          if (n + 1 < cap) out[n++] = L'"';
          ++p;
        }
      } else {
        for (size_t i = 0; i < slashes && n + 1 < cap; ++i) out[n++] = L'\\';
      }
      continue;
    }
    if (*p == L'"') {
      if (quoted && p[1] == L'"') {
        if (n + 1 < cap) out[n++] = L'"';
        p += 2;
        continue;
      }
      quoted = !quoted;
      ++p;
      continue;
    }
    if (n + 1 < cap) out[n++] = *p;
    ++p;
  }
  out[n] = 0;
  return end;
}

// granule.dll beside this executable.
bool default_dll(wchar_t* out, size_t cap) {
  DWORD n = GetModuleFileNameW(nullptr, out, DWORD(cap));
  if (n == 0 || n >= cap) return false;
  wchar_t* slash = out;
  for (wchar_t* p = out; *p; ++p)
    if (*p == L'\\' || *p == L'/') slash = p + 1;
  const wchar_t name[] = L"granule.dll";
  if (size_t(slash - out) + sizeof name / sizeof(wchar_t) > cap) return false;
  for (size_t i = 0; i < sizeof name / sizeof(wchar_t); ++i) slash[i] = name[i];
  return true;
}

// Load `dll` into the suspended process through a remote LoadLibraryW.
bool inject(HANDLE process, const wchar_t* dll) {
  const SIZE_T bytes = (wcslen(dll) + 1) * sizeof(wchar_t);
  void* remote = VirtualAllocEx(process, nullptr, bytes, MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE);
  if (!remote) {
    say(L"VirtualAllocEx failed", nullptr, GetLastError());
    return false;
  }
  bool ok = false;
  if (!WriteProcessMemory(process, remote, dll, bytes, nullptr)) {
    say(L"WriteProcessMemory failed", nullptr, GetLastError());
  } else {
    // kernel32 sits at the same address in every process of a session.
    auto load = reinterpret_cast<LPTHREAD_START_ROUTINE>(
        reinterpret_cast<void*>(GetProcAddress(GetModuleHandleW(L"kernel32.dll"), "LoadLibraryW")));
    HANDLE thread = CreateRemoteThread(process, nullptr, 0, load, remote, 0, nullptr);
    if (!thread) {
      say(L"CreateRemoteThread failed", nullptr, GetLastError());
    } else {
      WaitForSingleObject(thread, INFINITE);
      DWORD code = 0;
      GetExitCodeThread(thread, &code);  // low 32 bits of the HMODULE
      CloseHandle(thread);
      ok = code != 0;
      if (!ok) say(L"LoadLibraryW failed in the program for", dll);
    }
  }
  VirtualFreeEx(process, remote, 0, MEM_RELEASE);
  return ok;
}

}  // namespace

int main() {
  const wchar_t* rest = skip_argument(GetCommandLineW(), true);
  static wchar_t dll[MAX_PATH * 4];
  dll[0] = 0;
  if (wcsncmp(rest, L"--dll", 5) == 0 && (rest[5] == L' ' || rest[5] == L'\t')) {
    rest = take_argument(skip_argument(rest, false), dll, sizeof dll / sizeof(wchar_t));
  }
  if (!*rest || *rest == L'-') {
    say(L"usage: granule-run.exe [--dll PATH] PROGRAM.exe [ARGS...]");
    return int(kLaunchFailed);
  }
  if (!dll[0]) {
    DWORD n = GetEnvironmentVariableW(L"GRANULE_DLL", dll, sizeof dll / sizeof(wchar_t));
    if (n == 0 || n >= sizeof dll / sizeof(wchar_t)) dll[0] = 0;
  }
  if (!dll[0] && !default_dll(dll, sizeof dll / sizeof(wchar_t))) {
    say(L"cannot locate granule.dll");
    return int(kLaunchFailed);
  }
  static wchar_t full[MAX_PATH * 4];
  DWORD n = GetFullPathNameW(dll, sizeof full / sizeof(wchar_t), full, nullptr);
  if (n == 0 || n >= sizeof full / sizeof(wchar_t)) {
    say(L"bad DLL path", dll, GetLastError());
    return int(kLaunchFailed);
  }
  if (GetFileAttributesW(full) == INVALID_FILE_ATTRIBUTES) {
    say(L"DLL not found:", full, GetLastError());
    return int(kLaunchFailed);
  }

  // CreateProcessW may write to the command line: give it a copy.
  static wchar_t command[32768];
  if (wcslen(rest) >= sizeof command / sizeof(wchar_t)) {
    say(L"command line too long");
    return int(kLaunchFailed);
  }
  wcscpy(command, rest);
  STARTUPINFOW si = {};
  si.cb = sizeof si;
  PROCESS_INFORMATION pi = {};
  if (!CreateProcessW(nullptr, command, nullptr, nullptr, TRUE, CREATE_SUSPENDED, nullptr, nullptr,
                      &si, &pi)) {
    say(L"cannot start", rest, GetLastError());
    return int(kLaunchFailed);
  }
  if (!inject(pi.hProcess, full)) {
    TerminateProcess(pi.hProcess, kLaunchFailed);
    CloseHandle(pi.hThread);
    CloseHandle(pi.hProcess);
    return int(kLaunchFailed);
  }
  // Ctrl+C reaches the program (same console); don't die before it does.
  SetConsoleCtrlHandler(nullptr, TRUE);
  ResumeThread(pi.hThread);
  CloseHandle(pi.hThread);
  WaitForSingleObject(pi.hProcess, INFINITE);
  DWORD code = kLaunchFailed;
  GetExitCodeProcess(pi.hProcess, &code);
  CloseHandle(pi.hProcess);
  return int(code);
}
