// Loaded with RTLD_DEEPBIND by foreign.cpp: its malloc/free resolve to the
// C library's own allocator, not to the preloaded one.
#include <stdlib.h>

extern "C" __attribute__((visibility("default"))) void* deep_malloc(size_t n) { return malloc(n); }
extern "C" __attribute__((visibility("default"))) void deep_free(void* p) { free(p); }
