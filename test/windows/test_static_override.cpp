// A program linked with libgranule-static.a (link-time override): its own
// malloc/free/new/delete and the dllimport'ed _aligned_*/_msize/_expand/
// _recalloc are Granule's; blocks the C runtime allocates for itself
// (_strdup) reach our free/realloc and go back to the runtime.
#include <catch2/catch.hpp>

#include <direct.h>
#include <malloc.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "granule.h"

// msvcrt.dll has no _aligned_msize (so its headers don't declare it); the
// override defines it all the same.
extern "C" size_t _aligned_msize(void* p, size_t alignment, size_t offset);

TEST_CASE("link-time override: malloc family, new/delete and the _aligned_ family are Granule's") {
  void* p = std::malloc(100);
  CHECK(gr_owns(p));
  CHECK(_msize(p) >= 100);
  CHECK(_expand(p, 50) == p);
  p = std::realloc(p, 100000);
  CHECK(gr_owns(p));
  std::free(p);

  auto* z = static_cast<unsigned char*>(std::calloc(10, 10));
  REQUIRE(gr_owns(z));
  std::memset(z, 0xEE, 100);
  z = static_cast<unsigned char*>(_recalloc(z, 10, 300));
  REQUIRE(z);
  CHECK(z[99] == 0xEE);
  CHECK(z[2999] == 0);
  std::free(z);

  auto owned = std::make_unique<int[]>(1000);
  CHECK(gr_owns(owned.get()));
  std::string text(500, 'x');  // libstdc++'s operator new, statically linked
  CHECK(gr_owns(text.data()));

  void* a = _aligned_malloc(300, 128);
  CHECK(gr_owns(a));
  CHECK((uintptr_t(a) & 127) == 0);
  std::memset(a, 3, 300);
  a = _aligned_realloc(a, 9000, 128);
  REQUIRE(a);
  CHECK((uintptr_t(a) & 127) == 0);
  CHECK(static_cast<char*>(a)[299] == 3);
  _aligned_free(a);
  void* o = _aligned_offset_malloc(200, 64, 24);
  CHECK(gr_owns(o));
  CHECK(((uintptr_t(o) + 24) & 63) == 0);
  CHECK(_aligned_msize(o, 64, 24) >= 200);
  _aligned_free(o);
}

TEST_CASE("link-time override: runtime-allocated blocks go back to the runtime") {
  char* s = _strdup("made by the C runtime");
  REQUIRE(s);
  CHECK_FALSE(gr_owns(s));  // the runtime's internal malloc is not overridden
  CHECK(_msize(s) >= std::strlen(s) + 1);
  std::free(s);  // must reach the runtime's free, not Granule's

  char* t = _strdup("moved into Granule");
  char* u = static_cast<char*>(std::realloc(t, 4000));
  REQUIRE(u);
  CHECK(gr_owns(u));
  CHECK(std::strcmp(u, "moved into Granule") == 0);
  std::free(u);

  for (int i = 0; i < 10000; ++i) std::free(_strdup("again and again"));
  char* cwd = _getcwd(nullptr, 0);  // another runtime-internal allocation
  REQUIRE(cwd);
  std::free(cwd);
}
