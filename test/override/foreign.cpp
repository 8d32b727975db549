// Pointers Granule never handed out reach free, realloc and
// malloc_usable_size: a stack buffer, a static buffer, an mmap'd page, and
// glibc's own malloc reached through a library loaded with RTLD_DEEPBIND.
// Granule must leave them alone (contents intact, nothing corrupted) and
// report each once (GRANULE_SHOW_ERRORS=1).
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <sys/mman.h>

#include <catch2/catch.hpp>
#include <vector>

#include "preload.h"

namespace {
char g_static_buffer[256];

size_t opaque(size_t v) {
  volatile size_t x = v;
  return x;
}

bool all_equal(const char* p, size_t n, char c) {
  for (size_t i = 0; i < n; ++i)
    if (p[i] != c) return false;
  return true;
}

// Frees, reallocs and sizes p the way a confused program would; checks the
// answers and that p's bytes are untouched.
void abuse(char* p, size_t n, char c) {
  memset(p, c, n);
  free(p);
  free(p);  // reported once, not twice
  errno = 0;
  CHECK(realloc(p, opaque(n * 2)) == nullptr);
  CHECK(errno == EINVAL);
  CHECK(realloc(p, opaque(8)) == nullptr);
  CHECK(malloc_usable_size(p) == 0);
  CHECK(malloc_usable_size(p) == 0);
  CHECK(all_equal(p, n, c));
}

// The allocator still works: many blocks in several classes keep their
// contents and come from Granule.
void allocator_still_sound() {
  std::vector<char*> blocks;
  for (size_t i = 0; i < 20000; ++i) {
    size_t n = 16 + (i * 37) % 3000;
    auto* b = static_cast<char*>(malloc(n));
    REQUIRE(granule_owns(b));
    memset(b, char(i), n);
    blocks.push_back(b);
  }
  for (size_t i = 0; i < blocks.size(); ++i) {
    size_t n = 16 + (i * 37) % 3000;
    CHECK(all_equal(blocks[i], n, char(i)));
    free(blocks[i]);
  }
}
}  // namespace

TEST_CASE("stack, static and mmap'd pointers are left alone and reported once each") {
  REQUIRE(granule_owns_fn() != nullptr);
  char stack_buffer[128];
  void* page = mmap(nullptr, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(page != MAP_FAILED);
  CHECK(!granule_owns(stack_buffer));
  CHECK(!granule_owns(g_static_buffer));
  CHECK(!granule_owns(page));

  StderrCapture err;
  abuse(stack_buffer, sizeof stack_buffer, 's');
  abuse(g_static_buffer, sizeof g_static_buffer, 'g');
  abuse(static_cast<char*>(page), 1 << 20, 'm');
  std::string text = err.text();
  INFO(text);
  // One line per pointer and kind of misuse.
  CHECK(count_lines_with(text, "invalid free") == 3);
  CHECK(count_lines_with(text, "realloc of a pointer not allocated by granule") == 3);
  CHECK(count_lines_with(text, "malloc_usable_size of a pointer not allocated by granule") == 3);
  CHECK(count_lines_with(text, "granule: error:") == 9);
  munmap(page, 1 << 20);
  allocator_still_sound();
}

TEST_CASE("interior pointers and double frees of Granule blocks are caught, not acted on") {
  StderrCapture err;
  auto* p = static_cast<char*>(malloc(opaque(64)));
  memset(p, 'x', 64);
  free(p + 16);
  CHECK(realloc(p + 16, 10) == nullptr);
  CHECK(all_equal(p, 64, 'x'));  // still a live, untouched block
  auto* q = static_cast<char*>(malloc(opaque(64)));
  CHECK(q != p);  // p was not put on the free list
  free(q);
  free(p);
  free(p);  // the second time is a double free
  std::string text = err.text();
  INFO(text);
  CHECK(count_lines_with(text, "interior pointer") == 1);
  CHECK(count_lines_with(text, "double free") == 1);
  allocator_still_sound();
}

TEST_CASE("glibc's memory from an RTLD_DEEPBIND library is not taken over") {
  void* lib = dlopen(GRANULE_DEEP_LIB, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
  REQUIRE(lib != nullptr);
  auto deep_malloc = reinterpret_cast<void* (*)(size_t)>(dlsym(lib, "deep_malloc"));
  auto deep_free = reinterpret_cast<void (*)(void*)>(dlsym(lib, "deep_free"));
  REQUIRE(deep_malloc);
  REQUIRE(deep_free);
  // The library's own lookups find glibc's malloc before the preloaded one:
  // what it returns is glibc's memory.
  std::vector<char*> from_glibc;
  for (int i = 0; i < 50; ++i) {
    auto* p = static_cast<char*>(deep_malloc(100 + i));
    REQUIRE(p != nullptr);
    CHECK(!granule_owns(p));
    from_glibc.push_back(p);
  }
  StderrCapture err;
  for (int i = 0; i < 50; ++i) {
    memset(from_glibc[i], 'd', 100 + i);
    free(from_glibc[i]);  // the program's free is Granule's: reported, leaked
    CHECK(realloc(from_glibc[i], 10) == nullptr);
    CHECK(all_equal(from_glibc[i], 100 + i, 'd'));
  }
  std::string text = err.text();
  CHECK(count_lines_with(text, "invalid free") == 50);
  CHECK(count_lines_with(text, "realloc of a pointer not allocated by granule") == 50);
  // glibc's heap is intact, so glibc can still free them itself.
  for (char* p : from_glibc) deep_free(p);
  dlclose(lib);
  allocator_still_sound();
}
