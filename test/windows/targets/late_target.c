/* late-target GRANULE_DLL: allocates through its C runtime, then loads
 * granule.dll with LoadLibrary while running. Blocks from before must still
 * be freed, sized and reallocated correctly (they are the runtime's); blocks
 * from after must be Granule's, also from C runtimes loaded after Granule.
 * Exit 7 on success. */
#include <malloc.h>
#include <string.h>

#include "target_common.h"

typedef void* (*MallocFn)(size_t);
typedef void (*FreeFn)(void*);
typedef char* (*StrdupFn)(const char*);

static void late_runtime(const char* name) {
  HMODULE m = LoadLibraryA(name);
  MallocFn m_malloc;
  FreeFn m_free;
  StrdupFn m_strdup;
  void* p;
  char *s, line[128];
  if (!m) {
    printf("skip %s: not installed\n", name);
    return;
  }
  m_malloc = (MallocFn)(void*)GetProcAddress(m, "malloc");
  m_free = (FreeFn)(void*)GetProcAddress(m, "free");
  m_strdup = (StrdupFn)(void*)GetProcAddress(m, "_strdup");
  p = m_malloc(77);
  s = m_strdup("late runtime");
  sprintf(line, "%s loaded after Granule: malloc and _strdup served by Granule", name);
  check(line, p && s && g_owns(p) && g_owns(s) && strcmp(s, "late runtime") == 0);
  m_free(p);
  m_free(s);
  /* msvcr* export operator new/delete (MSVC x64 names). */
  {
    MallocFn m_new = (MallocFn)(void*)GetProcAddress(m, "??2@YAPEAX_K@Z");
    FreeFn m_delete = (FreeFn)(void*)GetProcAddress(m, "??3@YAXPEAX@Z");
    if (m_new && m_delete) {
      p = m_new(24);
      sprintf(line, "%s loaded after Granule: operator new served by Granule", name);
      check(line, p && g_owns(p));
      m_delete(p);
    }
  }
}

int main(int argc, char** argv) {
  char *p, *s, *big, *q, *n;
  void* a;
  int i, ok;
  HMODULE g;
  target_init();
  if (argc != 2) return 2;

  p = malloc(100);
  memset(p, 0x5A, 100);
  big = malloc(300000);
  memset(big, 0x3C, 300000);
  s = _strdup("before Granule");
  a = _aligned_malloc(200, 64);
  memset(a, 9, 200);

  g = LoadLibraryA(argv[1]);
  check("LoadLibrary(granule.dll)", g != NULL);
  if (!g) return 1;
  target_init();
  check("gr_owns is exported", g_owns != NULL);
  if (!g_owns) return 1;

  check("blocks from before are not Granule's",
        !g_owns(p) && !g_owns(s) && !g_owns(a) && !g_owns(big));
  check("_msize of a block from before", _msize(p) >= 100 && _msize(p) < 4096);
  q = realloc(p, 10000);
  ok = q != NULL && g_owns(q);
  for (i = 0; ok && i < 100; ++i) ok = q[i] == 0x5A;
  check("realloc moves a block from before into Granule, contents kept", ok);
  free(q);
  q = realloc(big, 1000);
  ok = q != NULL;
  for (i = 0; ok && i < 1000; ++i) ok = (unsigned char)q[i] == 0x3C;
  check("realloc shrinks a large block from before, contents kept", ok);
  free(q);
  check("_strdup from before is intact", strcmp(s, "before Granule") == 0);
  free(s);
  check("_aligned_free of a block from before", ((char*)a)[199] == 9);
  _aligned_free(a);

  n = malloc(40);
  s = _strdup("after Granule");
  check("malloc and _strdup after the load are Granule's", n && s && g_owns(n) && g_owns(s));
  free(n);
  free(s);

  late_runtime("msvcr120.dll");
  late_runtime("ucrtbase.dll");

  /* Pinned: FreeLibrary must not unmap the code the runtime now jumps to. */
  FreeLibrary(g);
  n = malloc(64);
  check("after FreeLibrary(granule.dll), malloc still works and is Granule's", n && g_owns(n));
  free(n);

  printf("late-target: %d failures\n", g_failures);
  fflush(stdout);
  return g_failures ? 1 : 7;
}
