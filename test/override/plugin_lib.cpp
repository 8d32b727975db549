// A library that allocates at load (constructor), per thread (thread_local),
// in calls, and frees at unload; dlopen_plugins.cpp loads and unloads it
// many times.
#include <stdlib.h>
#include <string.h>

#include <map>
#include <string>
#include <vector>

namespace {
std::map<std::string, std::vector<int>>* g_table;
thread_local std::string t_scratch(200, 'p');
}  // namespace

__attribute__((constructor)) static void plugin_load() {
  g_table = new std::map<std::string, std::vector<int>>();
  for (int i = 0; i < 100; ++i) (*g_table)["key" + std::to_string(i)].assign(i + 1, i);
}

__attribute__((destructor)) static void plugin_unload() { delete g_table; }

// A block the caller owns and frees with free() after the library is gone.
extern "C" __attribute__((visibility("default"))) char* plugin_describe(int n) {
  t_scratch.append(std::to_string(n));
  std::string s = "entries=" + std::to_string(g_table->size()) + " n=" + std::to_string(n);
  return strdup(s.c_str());
}
