/* A C program that is not linked with Granule and does not preload it:
 * it dlopens libgranule.so (path in argv[1]) and uses the gr_* API. The
 * process' malloc stays glibc's; Granule serves only the gr_* calls. */
#include <dlfcn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "granule.h"

#define LOAD(name) typeof(&name) p_##name = (typeof(&name))dlsym(lib, #name)

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    printf("dlopen: %s\n", dlerror());
    return 1;
  }
  LOAD(gr_version);
  LOAD(gr_malloc);
  LOAD(gr_free);
  LOAD(gr_owns);
  LOAD(gr_realloc);
  LOAD(gr_usable_size);
  if (!p_gr_version || !p_gr_malloc || !p_gr_free || !p_gr_owns || !p_gr_realloc ||
      !p_gr_usable_size)
    return 1;
  int failures = 0;
  if (p_gr_version() !=
      ((GRANULE_VERSION_MAJOR << 16) | (GRANULE_VERSION_MINOR << 8) | GRANULE_VERSION_PATCH))
    ++failures;
  char* blocks[1000];
  for (int i = 0; i < 1000; ++i) {
    blocks[i] = p_gr_malloc(10 + i * 10);
    if (!blocks[i] || !p_gr_owns(blocks[i]) || p_gr_usable_size(blocks[i]) < (size_t)(10 + i * 10))
      ++failures;
    memset(blocks[i], i & 0xff, 10 + i * 10);
  }
  for (int i = 0; i < 1000; ++i) {
    blocks[i] = p_gr_realloc(blocks[i], 20 + i * 20);
    for (int j = 0; j < 10 + i * 10; ++j)
      if ((unsigned char)blocks[i][j] != (i & 0xff)) {
        ++failures;
        break;
      }
    p_gr_free(blocks[i]);
  }
  /* Not preloaded: the program's own malloc is still glibc's. */
  void* plain = malloc(100);
  if (p_gr_owns(plain)) ++failures;
  free(plain);
  printf("dlopen_granule: version %#x, %d failures\n", p_gr_version(), failures);
  return failures == 0 ? 0 : 1;
}
