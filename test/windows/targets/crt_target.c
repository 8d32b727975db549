/* A C program that knows nothing of Granule, built for msvcrt.dll and for
 * UCRT. With GRANULE_TEST_EXPECT=1 it also checks (through gr_owns and
 * gr_stats_get found by GetProcAddress) that its blocks, including those the
 * runtime allocates for itself, come from Granule. Exit code 7 on success. */
#include <malloc.h>
#include <string.h>

#include "target_common.h"

/* The first fields of gr_stats_t (granule.h), room for the rest. */
typedef struct {
  size_t reserved, committed, in_use;
  char rest[8192];
} StatsPrefix;
typedef void (*StatsFn)(StatsPrefix*);

static size_t in_use(void) {
  HMODULE g = GetModuleHandleA("granule.dll");
  StatsFn f = g ? (StatsFn)(void*)GetProcAddress(g, "gr_stats_get") : NULL;
  StatsPrefix s;
  if (!f) return 0;
  f(&s);
  return s.in_use;
}

int main(void) {
  int expect, i, ok;
  char *s, *p, *q;
  unsigned char* z;
  void* a;
  size_t before, during;
  char path[MAX_PATH + 64];
  FILE* f;

  target_init();
  expect = expecting_granule();
  if (expect && !g_owns) {
    fprintf(stderr, "granule.dll is not loaded\n");
    return 90;
  }

  /* A variable the runtime copied at start-up (before any patch): replacing
   * it frees the runtime's block. */
  check("_putenv replaces a start-up variable",
        _putenv("GRANULE_TEST_EXPECT=done") == 0 &&
            strcmp(getenv("GRANULE_TEST_EXPECT"), "done") == 0);
  check("_putenv adds a variable",
        _putenv("GRANULE_TEST_NEW=42") == 0 && strcmp(getenv("GRANULE_TEST_NEW"), "42") == 0);

  s = _strdup("runtime-internal allocation");
  served(expect, "_strdup", s);
  check("_strdup copies", strcmp(s, "runtime-internal allocation") == 0);
  free(s);

  p = malloc(1);
  ok = p != NULL;
  for (i = 1; ok && i <= 17; ++i) {
    size_t n = (size_t)1 << i;
    p[n / 2 - 1] = (char)i;
    q = realloc(p, n);
    if (!q)
      ok = 0;
    else if (q[n / 2 - 1] != (char)i)
      ok = 0;
    p = q;
  }
  served(expect, "realloc", p);
  check("realloc grows to 128 KiB keeping contents", ok);
  check("_msize covers the request", _msize(p) >= ((size_t)1 << 17));
  check("_expand shrinks in place", _expand(p, 100) == p);
  check("realloc(p, 0) frees", realloc(p, 0) == NULL);

  z = calloc(1000, 3);
  served(expect, "calloc", z);
  ok = z != NULL;
  for (i = 0; ok && i < 3000; ++i) ok = z[i] == 0;
  check("calloc zeroes", ok);
#if defined(_UCRT) /* the system msvcrt.dll has no _recalloc */
  memset(z, 0xAB, 3000);
  z = _recalloc(z, 1000, 5);
  ok = z != NULL && z[2999] == 0xAB;
  for (i = 3000; ok && i < 5000; ++i) ok = z[i] == 0;
  check("_recalloc keeps and zeroes", ok);
#endif
  free(z);

  a = _aligned_malloc(1000, 256);
  served(expect, "_aligned_malloc", a);
  check("_aligned_malloc aligns", a && ((size_t)a & 255) == 0);
  memset(a, 7, 1000);
  a = _aligned_realloc(a, 50000, 256);
  check("_aligned_realloc aligns and keeps", a && ((size_t)a & 255) == 0 && ((char*)a)[999] == 7);
  _aligned_free(a);
  a = _aligned_offset_malloc(100, 64, 8);
  served(expect, "_aligned_offset_malloc", a);
  check("_aligned_offset_malloc aligns p + offset", a && (((size_t)a + 8) & 63) == 0);
  memset(a, 1, 100);
  _aligned_free(a);

#if !defined(_UCRT)
  /* msvcrt.dll's operator new/delete (MSVC x64 names), as MSVC-built C++
   * code linked against msvcrt would call them. */
  {
    typedef void* (*NewFn)(size_t);
    typedef void (*DeleteFn)(void*);
    HMODULE crt = GetModuleHandleA("msvcrt.dll");
    NewFn op_new = (NewFn)(void*)GetProcAddress(crt, "??2@YAPEAX_K@Z");
    DeleteFn op_delete = (DeleteFn)(void*)GetProcAddress(crt, "??3@YAXPEAX@Z");
    void* o = op_new ? op_new(40) : NULL;
    served(expect, "msvcrt operator new", o);
    check("msvcrt operator new/delete", o != NULL);
    if (o) op_delete(o);
  }
#endif

  /* The stdio buffer of a new stream is the runtime's own malloc. */
  GetTempPathA(MAX_PATH, path);
  strcat(path, "granule-crt-target.txt");
  before = in_use();
  f = fopen(path, "w");
  check("fopen", f != NULL);
  if (f) {
    fputs("buffered", f);
    during = in_use();
    if (expect && during < before + 4096) {
      fprintf(stderr, "stdio buffer not from Granule: in use %lu -> %lu\n", (unsigned long)before,
              (unsigned long)during);
      ++g_failures;
    }
    check("fclose", fclose(f) == 0);
  }
  remove(path);

  printf("crt-target: %d failures\n", g_failures);
  fflush(stdout);
  return g_failures ? 1 : 7;
}
