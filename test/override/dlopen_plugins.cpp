// dlopen and dlclose, 300 times, a library that allocates in its
// constructor, in thread_locals and in calls, from the main thread and from
// threads; blocks it handed out are freed after it is unloaded.
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "preload.h"

int main() {
  if (!granule_owns_fn()) {
    printf("not running on granule\n");
    return 1;
  }
  std::vector<char*> kept;
  int failures = 0;
  for (int i = 0; i < 300; ++i) {
    void* lib = dlopen(GRANULE_PLUGIN_LIB, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      printf("dlopen: %s\n", dlerror());
      return 1;
    }
    auto describe = reinterpret_cast<char* (*)(int)>(dlsym(lib, "plugin_describe"));
    char* d = describe(i);
    std::string want = "entries=100 n=" + std::to_string(i);
    if (want != d || !granule_owns(d)) ++failures;
    kept.push_back(d);
    std::atomic<int> good{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 2; ++t) {
      threads.emplace_back([&, t] {
        char* s = describe(t);
        good += granule_owns(s) && std::string(s) == "entries=100 n=" + std::to_string(t);
        free(s);
      });
    }
    for (auto& t : threads) t.join();
    if (good != 2) ++failures;
    if (dlclose(lib) != 0) ++failures;
  }
  for (char* d : kept) free(d);
  printf("dlopen_plugins: 300 load/unload cycles, %d failures\n", failures);
  return failures == 0 ? 0 : 1;
}
