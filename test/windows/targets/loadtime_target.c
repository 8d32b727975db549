/* Linked against granule.dll's import library (load-time linking): the
 * loader maps granule.dll before main, and its detours serve this program's
 * C runtime. Exit 0 on success (run by meson directly). */
#include <malloc.h>
#include <string.h>

#include "granule.h"
#include "target_common.h"

int main(void) {
  char *p, *s;
  void* a;
  FILE* f;
  char path[MAX_PATH + 64];
  target_init();
  check("granule.dll is loaded", g_owns != NULL);
  p = malloc(123);
  s = _strdup("load-time");
  a = _aligned_malloc(64, 128);
  check("malloc, _strdup and _aligned_malloc are Granule's",
        gr_owns(p) && gr_owns(s) && gr_owns(a));
  check("_msize sees Granule's size", _msize(p) == gr_usable_size(p));
  free(p);
  free(s);
  _aligned_free(a);
  GetTempPathA(MAX_PATH, path);
  strcat(path, "granule-loadtime.txt");
  f = fopen(path, "w");
  check("stdio works", f && fputs("x", f) >= 0 && fclose(f) == 0);
  remove(path);
  printf("loadtime-target: %d failures\n", g_failures);
  fflush(stdout);
  return g_failures ? 1 : 0;
}
