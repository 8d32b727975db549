// The Catch2 runner, compiled once (it takes ~20 s with mingw) and linked into
// every Windows-side test program.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#if defined(_WIN32)
#define WIN32_LEAN_AND_MEAN
#include <windows.h>

#include <cstdio>

// Under Wine an unhandled exception starts winedbg, and the test can end with
// exit status 0. Fail loudly instead.
namespace {
LONG WINAPI die_on_crash(EXCEPTION_POINTERS* info) {
  std::fprintf(stderr, "test crashed: exception 0x%08lx at %p\n",
               info->ExceptionRecord->ExceptionCode, info->ExceptionRecord->ExceptionAddress);
  std::fflush(stderr);
  TerminateProcess(GetCurrentProcess(), 3);
  return EXCEPTION_EXECUTE_HANDLER;
}
struct InstallCrashFilter {
  InstallCrashFilter() {
    SetErrorMode(SEM_FAILCRITICALERRORS | SEM_NOGPFAULTERRORBOX);
    SetUnhandledExceptionFilter(die_on_crash);
  }
} g_install_crash_filter;
}  // namespace
#endif
