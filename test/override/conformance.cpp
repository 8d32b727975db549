// The exported contract of libgranule.so, checked through the libc names a
// program calls (run with LD_PRELOAD, GRANULE_SHOW_ERRORS=1): errno values,
// EINVAL cases, alignment, page rounding, overflow, realloc(p, 0), glibc's
// extras, the C++ operators, and the things libc allocates for a program.
#include <dirent.h>
#include <errno.h>
#include <malloc.h>
#include <netdb.h>
#include <regex.h>
#include <stdint.h>

#include <catch2/catch.hpp>
#include <new>
#include <vector>

#include "preload.h"

extern "C" {
// glibc's internal names; declared here because no header does.
void* __libc_malloc(size_t);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void __libc_free(void*);
void* __libc_memalign(size_t, size_t);
}

namespace {

// Keeps the compiler from proving things about our allocations (it may
// elide malloc/free pairs and new/delete pairs it can see).
void* volatile g_sink;
size_t opaque(size_t v) {
  volatile size_t x = v;
  return x;
}

const size_t kPage = size_t(sysconf(_SC_PAGESIZE));
const size_t kHuge = SIZE_MAX / 2;  // no machine has this much

bool aligned(const void* p, size_t a) { return (uintptr_t(p) & (a - 1)) == 0; }

template <class Fn>
Fn sym(const char* name) {
  return reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, name));
}

void fill(void* p, size_t n, unsigned seed) {
  auto* b = static_cast<unsigned char*>(p);
  for (size_t i = 0; i < n; ++i) b[i] = (unsigned char)(seed + i * 7);
}
bool same(const void* p, size_t n, unsigned seed) {
  auto* b = static_cast<const unsigned char*>(p);
  for (size_t i = 0; i < n; ++i)
    if (b[i] != (unsigned char)(seed + i * 7)) return false;
  return true;
}

}  // namespace

TEST_CASE("the process runs on Granule") {
  REQUIRE(granule_owns_fn() != nullptr);
  void* p = malloc(opaque(10));
  CHECK(granule_owns(p));
  free(p);
  int* q = new int(5);
  CHECK(granule_owns(q));
  delete q;
  // glibc's own names must lead to Granule too.
  for (void* r :
       {__libc_malloc(opaque(24)), __libc_calloc(1, opaque(24)), __libc_memalign(64, opaque(24))}) {
    CHECK(granule_owns(r));
    __libc_free(r);
  }
  void* r = __libc_realloc(nullptr, opaque(100));
  CHECK(granule_owns(r));
  r = __libc_realloc(r, opaque(5000));
  CHECK(granule_owns(r));
  __libc_free(r);
}

TEST_CASE("malloc, calloc: sizes, zeroing, ENOMEM") {
  errno = 0;
  CHECK(malloc(opaque(SIZE_MAX)) == nullptr);
  CHECK(errno == ENOMEM);
  errno = 0;
  CHECK(malloc(opaque(kHuge)) == nullptr);
  CHECK(errno == ENOMEM);
  errno = 0;
  CHECK(calloc(opaque(SIZE_MAX / 2 + 1), 2) == nullptr);
  CHECK(errno == ENOMEM);
  errno = 0;
  CHECK(calloc(2, opaque(SIZE_MAX / 2 + 1)) == nullptr);
  CHECK(errno == ENOMEM);

  void* z = malloc(opaque(0));
  REQUIRE(z != nullptr);  // glibc returns a unique pointer for 0
  CHECK(granule_owns(z));
  free(z);

  // calloc must zero memory that was dirty before.
  for (size_t size : {24u, 256u, 4000u, 70000u, 3u << 20}) {
    std::vector<void*> dirty;
    for (int i = 0; i < 16; ++i) {
      void* p = malloc(size);
      memset(p, 0xA5, size);
      dirty.push_back(p);
    }
    for (void* p : dirty) free(p);
    for (int i = 0; i < 16; ++i) {
      auto* c = static_cast<unsigned char*>(calloc(1, size));
      REQUIRE(c != nullptr);
      size_t nonzero = 0;
      for (size_t j = 0; j < size; ++j) nonzero += c[j] != 0;
      CHECK(nonzero == 0);
      dirty[i] = c;
    }
    for (void* p : dirty) free(p);
  }
  free(nullptr);  // does nothing
}

TEST_CASE("malloc_usable_size") {
  CHECK(malloc_usable_size(nullptr) == 0);
  for (size_t n : {1u, 15u, 16u, 17u, 100u, 1000u, 8192u, 100000u, 5u << 20}) {
    auto* p = static_cast<char*>(malloc(n));
    size_t u = malloc_usable_size(p);
    CHECK(u >= n);
    memset(p, 1, u);  // all of it is writable
    CHECK(aligned(p, 16));
    free(p);
  }
}

TEST_CASE("realloc: contents, realloc(NULL), realloc(p, 0), ENOMEM keeps p") {
  auto* p = static_cast<char*>(realloc(nullptr, opaque(16)));
  REQUIRE(p);
  fill(p, 16, 3);
  size_t prev = 16;
  for (size_t n : {100u, 5000u, 70000u, 600000u, 5u << 20, 70u << 20, 1000u, 16u}) {
    p = static_cast<char*>(realloc(p, n));
    REQUIRE(p);
    size_t keep = n < prev ? n : prev;
    CHECK(same(p, keep, 3));
    fill(p, n, 3);
    prev = n;
  }
  // Failure leaves the block and errno says why.
  errno = 0;
  CHECK(realloc(p, opaque(kHuge)) == nullptr);
  CHECK(errno == ENOMEM);
  CHECK(same(p, 16, 3));

  // As glibc: realloc(p, 0) frees p and returns NULL. Freed means reused:
  // the thread's next block of that class is p again (LIFO free list).
  void* a = malloc(opaque(40));
  CHECK(realloc(a, 0) == nullptr);
  void* b = malloc(opaque(40));
  CHECK(b == a);
  free(b);
  free(p);
}

TEST_CASE("reallocarray overflow") {
  void* p = reallocarray(nullptr, 10, opaque(10));
  REQUIRE(p);
  fill(p, 100, 9);
  errno = 0;
  CHECK(reallocarray(p, opaque(SIZE_MAX), 2) == nullptr);
  CHECK(errno == ENOMEM);
  errno = 0;
  CHECK(reallocarray(p, opaque(SIZE_MAX / 2 + 1), 2) == nullptr);
  CHECK(errno == ENOMEM);
  CHECK(same(p, 100, 9));  // untouched by the failures
  p = reallocarray(p, 1000, opaque(10));
  REQUIRE(p);
  CHECK(same(p, 100, 9));
  free(p);
}

TEST_CASE("posix_memalign: EINVAL cases leave *out alone, every alignment honoured") {
  void* sentinel = &sentinel;
  for (size_t bad : {0ul, 1ul, 2ul, 4ul, 12ul, 24ul, 48ul, 4097ul, SIZE_MAX}) {
    void* out = sentinel;
    errno = 0;
    CHECK(posix_memalign(&out, bad, 16) == EINVAL);
    CHECK(out == sentinel);
    CHECK(errno == 0);  // it reports through its result only
  }
  void* out = sentinel;
  CHECK(posix_memalign(&out, 64, opaque(kHuge)) == ENOMEM);
  CHECK(out == sentinel);
  for (size_t a = sizeof(void*); a <= (2u << 20); a <<= 1) {
    for (size_t n : {size_t(1), a - 1, a, 3 * a + 5}) {
      void* p = nullptr;
      REQUIRE(posix_memalign(&p, a, n) == 0);
      CHECK(aligned(p, a));
      CHECK(malloc_usable_size(p) >= n);
      memset(p, 7, n);
      free(p);
    }
  }
  void* p = sentinel;
  CHECK(posix_memalign(&p, 16, 0) == 0);
  free(p);  // NULL or a unique block: both freeable
}

TEST_CASE("aligned_alloc and memalign") {
  // aligned_alloc is strict (C17, glibc >= 2.38): not a power of two is EINVAL.
  for (size_t bad : {0ul, 3ul, 24ul, 48ul, 1000ul}) {
    errno = 0;
    CHECK(aligned_alloc(bad, 64) == nullptr);
    CHECK(errno == EINVAL);
  }
  // memalign follows glibc: rounds the alignment up to a power of two, and
  // refuses only alignments no power of two can satisfy.
  void* m = memalign(opaque(24), 10);
  REQUIRE(m);
  CHECK(aligned(m, 32));
  free(m);
  errno = 0;
  CHECK(memalign(opaque(SIZE_MAX / 2 + 2), 10) == nullptr);
  CHECK(errno == EINVAL);
  errno = 0;
  CHECK(memalign(64, opaque(kHuge)) == nullptr);
  CHECK(errno == ENOMEM);
  errno = 0;
  CHECK(aligned_alloc(64, opaque(kHuge)) == nullptr);
  CHECK(errno == ENOMEM);
  for (size_t a = 1; a <= (2u << 20); a <<= 1) {
    for (size_t n : {size_t(1), a + 1, 2 * a, 5 * a + 3}) {
      void* p = aligned_alloc(a, n);
      void* q = memalign(a, n);
      REQUIRE(p);
      REQUIRE(q);
      CHECK(aligned(p, a < 16 ? 16 : a));
      CHECK(aligned(q, a < 16 ? 16 : a));
      memset(p, 1, n);
      memset(q, 2, n);
      free(p);
      free(q);
    }
  }
}

TEST_CASE("valloc and pvalloc round to pages") {
  for (size_t n :
       {size_t(0), size_t(1), kPage - 1, kPage, kPage + 1, 10 * kPage + 7, size_t(3) << 20}) {
    void* v = valloc(n);
    REQUIRE(v);
    CHECK(aligned(v, kPage));
    CHECK(malloc_usable_size(v) >= n);
    void* pv = pvalloc(n);
    REQUIRE(pv);
    CHECK(aligned(pv, kPage));
    size_t rounded = n ? (n + kPage - 1) / kPage * kPage : kPage;
    CHECK(malloc_usable_size(pv) >= rounded);
    memset(pv, 3, rounded);  // the whole rounded size is the caller's
    free(v);
    free(pv);
  }
  errno = 0;
  CHECK(pvalloc(opaque(SIZE_MAX - 10)) == nullptr);  // rounding would overflow
  CHECK(errno == ENOMEM);
  errno = 0;
  CHECK(valloc(opaque(SIZE_MAX)) == nullptr);
  CHECK(errno == ENOMEM);
}

TEST_CASE("cfree, free_sized, free_aligned_sized are exported and free") {
  auto cfree_fn = sym<void (*)(void*)>("cfree");
  auto free_sized_fn = sym<void (*)(void*, size_t)>("free_sized");
  auto free_aligned_sized_fn = sym<void (*)(void*, size_t, size_t)>("free_aligned_sized");
  REQUIRE(cfree_fn);
  REQUIRE(free_sized_fn);
  REQUIRE(free_aligned_sized_fn);
  StderrCapture err;
  for (int i = 0; i < 1000; ++i) {
    cfree_fn(malloc(opaque(32)));
    free_sized_fn(malloc(opaque(200)), 200);
    free_aligned_sized_fn(aligned_alloc(256, opaque(300)), 256, 300);
  }
  // Freed means reused: the next block of the class is the one just freed.
  void* a = malloc(opaque(200));
  free_sized_fn(a, 200);
  CHECK(malloc(opaque(200)) == a);
  free(a);
  CHECK(err.text() == "");
}

TEST_CASE("mallopt, mallinfo2, mallinfo, malloc_trim, malloc_stats") {
  // glibc returns 1 for every parameter it knows or ignores, 0 only for a
  // value it refuses (M_MXFAST beyond 80 * sizeof(size_t) / 4).
  CHECK(mallopt(M_ARENA_MAX, 2) == 1);
  CHECK(mallopt(M_MMAP_THRESHOLD, 1 << 20) == 1);
  CHECK(mallopt(M_TRIM_THRESHOLD, 1 << 20) == 1);
  CHECK(mallopt(M_PERTURB, 0) == 1);
  CHECK(mallopt(12345, 1) == 1);
  CHECK(mallopt(M_MXFAST, 64) == 1);
  CHECK(mallopt(M_MXFAST, 100000) == 0);
  CHECK(mallopt(M_MXFAST, -1) == 0);

  const size_t kBlocks = 40000, kSize = 1000;
  struct mallinfo2 before = mallinfo2();
  std::vector<void*> blocks;
  for (size_t i = 0; i < kBlocks; ++i) {
    blocks.push_back(malloc(kSize));
    memset(blocks.back(), 1, kSize);
  }
  struct mallinfo2 during = mallinfo2();
  CHECK(during.uordblks >= before.uordblks + kBlocks * kSize);
  CHECK(during.arena >= during.uordblks);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"  // still exported, still tested
  struct mallinfo old = mallinfo();
#pragma GCC diagnostic pop
  CHECK(size_t(old.uordblks) >= kBlocks * kSize);
  for (void* p : blocks) free(p);
  struct mallinfo2 after = mallinfo2();
  CHECK(after.uordblks + kBlocks * kSize <= during.uordblks);
  // 40 MB just became free (the purge delay is "never" in this test), so a
  // trim has something to give back and says so.
  CHECK(malloc_trim(0) == 1);
  CHECK(mallinfo2().arena < during.arena);

  StderrCapture err;
  malloc_stats();
  CHECK(err.text().find("allocations") != std::string::npos);
}

namespace {
int g_handler_calls = 0;
void handler_gives_up() {
  ++g_handler_calls;
  if (g_handler_calls == 3) std::set_new_handler(nullptr);  // the next failure throws
}
struct alignas(256) Wide {
  char bytes[256];
};
}  // namespace

TEST_CASE("operator new: bad_alloc, nothrow, new_handler") {
  CHECK_THROWS_AS(g_sink = ::operator new(opaque(kHuge)), std::bad_alloc);
  CHECK_THROWS_AS(g_sink = ::operator new[](opaque(kHuge)), std::bad_alloc);
  CHECK_THROWS_AS(g_sink = ::operator new(opaque(kHuge), std::align_val_t(64)), std::bad_alloc);
  CHECK_THROWS_AS(g_sink = ::operator new[](opaque(kHuge), std::align_val_t(4096)), std::bad_alloc);
  CHECK(::operator new(opaque(kHuge), std::nothrow) == nullptr);
  CHECK(::operator new[](opaque(kHuge), std::nothrow) == nullptr);
  CHECK(::operator new(opaque(kHuge), std::align_val_t(64), std::nothrow) == nullptr);
  CHECK(::operator new[](opaque(kHuge), std::align_val_t(64), std::nothrow) == nullptr);

  g_handler_calls = 0;
  std::set_new_handler(handler_gives_up);
  CHECK_THROWS_AS(g_sink = ::operator new(opaque(kHuge)), std::bad_alloc);
  CHECK(g_handler_calls == 3);
  g_handler_calls = 0;
  std::set_new_handler(handler_gives_up);
  CHECK(::operator new(opaque(kHuge), std::nothrow) == nullptr);
  CHECK(g_handler_calls == 3);  // nothrow new tries the handler too
  std::set_new_handler(nullptr);
}

TEST_CASE("operator new/delete: every form, sized and aligned delete") {
  StderrCapture err;
  for (int round = 0; round < 200; ++round) {
    void* p = ::operator new(opaque(48));
    CHECK(granule_owns(p));
    ::operator delete(p, 48);
    p = ::operator new[](opaque(480));
    ::operator delete[](p, 480);
    p = ::operator new(opaque(48), std::nothrow);
    ::operator delete(p, std::nothrow);
    p = ::operator new[](opaque(48), std::nothrow);
    ::operator delete[](p, std::nothrow);
    for (size_t a : {32ul, 256ul, 4096ul, 65536ul, 1ul << 20}) {
      void* q = ::operator new(opaque(a + 8), std::align_val_t(a));
      CHECK(aligned(q, a));
      ::operator delete(q, a + 8, std::align_val_t(a));
      q = ::operator new[](opaque(3 * a), std::align_val_t(a));
      CHECK(aligned(q, a));
      ::operator delete[](q, 3 * a, std::align_val_t(a));
      q = ::operator new(opaque(a), std::align_val_t(a), std::nothrow);
      CHECK(aligned(q, a));
      ::operator delete(q, std::align_val_t(a), std::nothrow);
      q = ::operator new[](opaque(a), std::align_val_t(a), std::nothrow);
      CHECK(aligned(q, a));
      ::operator delete[](q, std::align_val_t(a), std::nothrow);
      q = ::operator new(opaque(a), std::align_val_t(a));
      ::operator delete(q, std::align_val_t(a));
      q = ::operator new[](opaque(a), std::align_val_t(a));
      ::operator delete[](q, std::align_val_t(a));
    }
    auto* w = new Wide[3];  // over-aligned: the compiler picks the aligned forms
    CHECK(aligned(w, 256));
    delete[] w;
    auto* one = new Wide;
    CHECK(aligned(one, 256));
    delete one;
  }
  // Sized delete really freed: the block comes back.
  void* a = ::operator new(opaque(96));
  ::operator delete(a, 96);
  void* b = ::operator new(opaque(96));
  CHECK(a == b);
  ::operator delete(b, 96);
  CHECK(err.text() == "");
}

TEST_CASE("what libc allocates for the program is freed by Granule without errors") {
  StderrCapture err;
  char* s = strdup("granule");
  CHECK(granule_owns(s));
  free(s);
  s = strndup("granule allocator", 7);
  CHECK(granule_owns(s));
  free(s);

  char* text = nullptr;
  CHECK(asprintf(&text, "%d-%s-%f", 42, "x", 1.5) > 0);
  CHECK(granule_owns(text));
  free(text);

  char* mem = nullptr;
  size_t mem_size = 0;
  FILE* ms = open_memstream(&mem, &mem_size);
  REQUIRE(ms);
  for (int i = 0; i < 10000; ++i) fprintf(ms, "line %d\n", i);
  fclose(ms);
  CHECK(mem_size > 60000);
  CHECK(granule_owns(mem));
  free(mem);

  // getline grows a buffer with realloc; fopen/fclose allocate the FILE and
  // its buffer.
  char name[] = "/tmp/granule-lines-XXXXXX";
  int fd = mkstemp(name);
  REQUIRE(fd >= 0);
  FILE* w = fdopen(fd, "w");
  for (int i = 0; i < 200; ++i) fprintf(w, "%0*d\n", 10 + i * 10, i);
  fclose(w);
  FILE* r = fopen(name, "r");
  REQUIRE(r);
  char* line = nullptr;
  size_t cap = 0;
  int lines = 0;
  while (getline(&line, &cap, r) > 0) ++lines;
  CHECK(lines == 200);
  CHECK(granule_owns(line));
  free(line);
  fclose(r);
  unlink(name);

  struct addrinfo hints = {};
  hints.ai_socktype = SOCK_STREAM;
  struct addrinfo* res = nullptr;
  CHECK(getaddrinfo("localhost", "80", &hints, &res) == 0);
  CHECK(res != nullptr);
  freeaddrinfo(res);

  regex_t re;
  REQUIRE(regcomp(&re, "^([a-z]+)-([0-9]+)$", REG_EXTENDED) == 0);
  regmatch_t m[3];
  CHECK(regexec(&re, "granule-42", 3, m, 0) == 0);
  CHECK(regexec(&re, "nope", 3, m, 0) == REG_NOMATCH);
  regfree(&re);

  struct dirent** entries = nullptr;
  int n = scandir("/", &entries, nullptr, alphasort);
  CHECK(n > 3);
  CHECK(granule_owns(entries));
  for (int i = 0; i < n; ++i) free(entries[i]);
  free(entries);

  char* cwd = getcwd(nullptr, 0);
  CHECK(granule_owns(cwd));
  free(cwd);
  char* real = realpath("/usr/bin/../lib", nullptr);
  CHECK(granule_owns(real));
  free(real);

  CHECK(err.text() == "");
}
