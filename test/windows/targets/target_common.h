/* Shared by the target programs: they know nothing of Granule at build time
 * and find it, when present, with GetProcAddress. Their output must not
 * depend on whether Granule is there, so checks print the same line either
 * way and complaints about who served a block go to stderr. */
#ifndef TARGET_COMMON_H
#define TARGET_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <windows.h>

typedef int (*OwnsFn)(const void*);
static OwnsFn g_owns;
static int g_failures;

/* Under Wine an unhandled exception may end the process with status 0: make
 * a crash visible. */
static LONG WINAPI target_die(EXCEPTION_POINTERS* info) {
  fprintf(stderr, "target crashed: exception 0x%08lx at %p\n", info->ExceptionRecord->ExceptionCode,
          info->ExceptionRecord->ExceptionAddress);
  fflush(stderr);
  TerminateProcess(GetCurrentProcess(), 3);
  return EXCEPTION_EXECUTE_HANDLER;
}

static inline void target_init(void) {
  HMODULE g;
  SetErrorMode(SEM_FAILCRITICALERRORS | SEM_NOGPFAULTERRORBOX);
  SetUnhandledExceptionFilter(target_die);
  g = GetModuleHandleA("granule.dll");
  g_owns = g ? (OwnsFn)(void*)GetProcAddress(g, "gr_owns") : NULL;
}

static inline void check(const char* what, int ok) {
  printf("%s %s\n", ok ? "ok  " : "FAIL", what);
  if (!ok) ++g_failures;
}

/* When Granule is expected, p must be one of its blocks. */
static inline void served(int expected, const char* what, const void* p) {
  if (!expected) return;
  if (!g_owns || !g_owns(p)) {
    fprintf(stderr, "not served by Granule: %s (%p)\n", what, p);
    ++g_failures;
  }
}

static inline int expecting_granule(void) {
  const char* e = getenv("GRANULE_TEST_EXPECT");
  return e && e[0] == '1';
}

#endif
