// A process ends when its last thread ends, even when every thread, the main
// one included, ends with pthread_exit. Granule's background purge thread
// must not be the one thread left keeping it alive (python3's test_threading
// hung this way in a fork child). Meson's timeout is the assertion.
#include <pthread.h>
#include <unistd.h>

#include "preload.h"

namespace {
size_t opaque(size_t v) {
  volatile size_t x = v;
  return x;
}

void* worker(void*) {
  // Enough freeing that the purge thread has been started by now.
  for (int i = 0; i < 50; ++i) free(malloc(opaque(300000 + i)));
  usleep(100 * 1000);  // the main thread is gone by now
  free(malloc(opaque(100)));
  return nullptr;
}
}  // namespace

int main() {
  if (!granule_owns_fn()) return 1;
  free(malloc(opaque(300000)));
  pthread_t t;
  pthread_create(&t, nullptr, worker, nullptr);
  pthread_detach(t);
  pthread_exit(nullptr);  // the exit status is 0 once the worker ends
}
