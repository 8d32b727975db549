// The first request to start the background purge thread can come from a
// free that finds a large span now empty. Starting the thread allocates
// (pthread_create's thread-local storage), so it must not happen while that
// free still holds a heap lock: this program deadlocked before that was fixed
// (seen in python3's test_threading under Granule). Meson's timeout is the
// assertion; the program also checks it ran on Granule.
#include <stdint.h>

#include <thread>

#include "preload.h"

namespace {
size_t opaque(size_t v) {
  volatile size_t x = v;
  return x;
}
}  // namespace

int main() {
  if (!granule_owns_fn()) return 1;
  // The main thread's own large span, freed: the heap lock is taken to
  // retire it, and the purge thread is started for the first time.
  void* big = malloc(opaque(300000));
  if (!granule_owns(big)) return 1;
  free(big);
  // The same from a fresh thread whose heap has no slabs yet.
  std::thread t([] { free(malloc(opaque(500000))); });
  t.join();
  printf("first_purge: ok\n");
  return 0;
}
