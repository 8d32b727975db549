// malloc before anything is ready: from the executable's .preinit_array
// (before any library's initialiser, libc's and Granule's included, and
// before libc has set up environ), from dlsym/dlerror, from a high-priority
// constructor, and from thread_local objects whose constructors allocate,
// in the main thread and in new threads. Run with libgranule.so preloaded
// and GRANULE_SHOW_ERRORS=1; stderr is captured from the very start.
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "preload.h"

extern char** environ;

namespace {

int g_failures = 0;
#define EXPECT(cond)                                             \
  do {                                                           \
    if (!(cond)) {                                               \
      ++g_failures;                                              \
      dprintf(1, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
    }                                                            \
  } while (0)

int g_err_fd = -1;  // stderr of the whole run, read back in main
int g_real_stderr = -1;
bool g_environ_was_null = false;
char* g_pre_blocks[64];
void* g_pre_dlsym = nullptr;
char* g_ctor_string = nullptr;
std::vector<std::string>* g_ctor_vector = nullptr;

void preinit(int, char**, char**) {
  // Capture stderr before anything can write to it.
  char name[] = "/tmp/granule-startup-XXXXXX";
  g_err_fd = mkstemp(name);
  unlink(name);
  g_real_stderr = dup(2);
  dup2(g_err_fd, 2);
  g_environ_was_null = environ == nullptr;
  for (int i = 0; i < 64; ++i) {
    g_pre_blocks[i] = static_cast<char*>(i % 2 ? malloc(size_t(16) << (i % 12)) : calloc(1, 100));
    if (g_pre_blocks[i]) g_pre_blocks[i][0] = char(i);
  }
  // dlsym and dlerror allocate (dlerror's message buffer) through us.
  g_pre_dlsym = dlsym(RTLD_DEFAULT, "gr_owns");
  (void)dlsym(RTLD_DEFAULT, "granule_no_such_symbol_anywhere");
  const char* e = dlerror();
  (void)e;
}

}  // namespace

__attribute__((section(".preinit_array"), used)) static void (*const g_preinit)(int, char**,
                                                                                char**) = preinit;

__attribute__((constructor(101))) static void early_constructor() {
  g_ctor_string = strdup("allocated in a priority-101 constructor");
  g_ctor_vector = new std::vector<std::string>();
  for (int i = 0; i < 100; ++i) g_ctor_vector->push_back(std::string(40 + i, 'c'));
}

namespace {

// Its constructor runs inside TLS set-up of each thread that touches it.
struct Tracked {
  std::vector<std::string> names;
  char* raw;
  Tracked() : raw(static_cast<char*>(malloc(1000))) {
    for (int i = 0; i < 50; ++i) names.push_back(std::string(64, char('a' + i % 26)));
    memset(raw, 't', 1000);
  }
  ~Tracked() { free(raw); }
};
thread_local Tracked t_tracked;

bool tls_ok() {
  bool ok = granule_owns(t_tracked.raw) && t_tracked.names.size() == 50;
  for (auto& s : t_tracked.names) ok = ok && granule_owns(s.data()) && s.size() == 64;
  return ok;
}

}  // namespace

int main() {
  EXPECT(granule_owns_fn() != nullptr);
  EXPECT(g_pre_dlsym == reinterpret_cast<void*>(granule_owns_fn()));
  // The point of the test: these allocations ran before libc's initialiser.
  EXPECT(g_environ_was_null);
  for (int i = 0; i < 64; ++i) {
    EXPECT(g_pre_blocks[i] && granule_owns(g_pre_blocks[i]));
    if (g_pre_blocks[i]) EXPECT(g_pre_blocks[i][0] == char(i));
    free(g_pre_blocks[i]);
  }
  EXPECT(granule_owns(g_ctor_string));
  free(g_ctor_string);
  EXPECT(g_ctor_vector->size() == 100);
  for (auto& s : *g_ctor_vector) EXPECT(granule_owns(s.data()));
  delete g_ctor_vector;

  // GRANULE_SHOW_ERRORS=1 must have been seen even though the first malloc
  // came before environ existed: an invalid free is reported.
  static char not_ours[16];
  char* volatile hidden = not_ours;  // the compiler rightly warns about the direct form
  free(hidden);

  EXPECT(tls_ok());
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int i = 0; i < 16; ++i) threads.emplace_back([&] { good += tls_ok() ? 1 : 0; });
  for (auto& t : threads) t.join();
  EXPECT(good == 16);

  fflush(stderr);
  dup2(g_real_stderr, 2);
  std::string text;
  char buf[4096];
  lseek(g_err_fd, 0, SEEK_SET);
  for (ssize_t n; (n = read(g_err_fd, buf, sizeof buf)) > 0;) text.append(buf, size_t(n));
  // Exactly the one report we provoked, nothing else.
  EXPECT(count_lines_with(text, "granule: error: invalid free") == 1);
  EXPECT(count_lines_with(text, "granule:") == 1);
  if (g_failures) dprintf(1, "captured stderr:\n%s\n", text.c_str());
  dprintf(1, "startup: %s\n", g_failures ? "FAILED" : "ok");
  return g_failures ? 1 : 0;
}
