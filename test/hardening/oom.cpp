// Out of address space (RLIMIT_AS), run under LD_PRELOAD by
// test/suites/oom.sh: every entry point fails cleanly (null + ENOMEM,
// std::bad_alloc from new), and works again once the limit is lifted.
#include <dlfcn.h>
#include <malloc.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

namespace {

int failures = 0;
void expect(bool ok, const char* what) {
  if (!ok) {
    std::printf("FAIL %s (errno %d)\n", what, errno);
    ++failures;
  }
}

size_t vm_size() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  unsigned long pages = 0;
  if (std::fscanf(f, "%lu", &pages) != 1) pages = 0;
  std::fclose(f);
  return pages * size_t(sysconf(_SC_PAGESIZE));
}

template <class Fn>
bool throws_bad_alloc(Fn fn) {
  try {
    fn();
  } catch (const std::bad_alloc&) {
    return true;
  }
  return false;
}

void* (*volatile launder)(void*) = [](void* p) { return p; };

}  // namespace

int main() {
  if (!dlsym(RTLD_DEFAULT, "gr_version")) {
    std::puts("FAIL granule is not preloaded");
    return 1;
  }
  constexpr size_t kBig = size_t(512) << 20;
  void* kept = std::malloc(100);
  std::memset(kept, 7, 100);
  struct rlimit old;
  getrlimit(RLIMIT_AS, &old);
  struct rlimit low = old;
  low.rlim_cur = vm_size() + (size_t(96) << 20);
  if (setrlimit(RLIMIT_AS, &low) != 0) {
    std::puts("FAIL setrlimit");
    return 1;
  }

  errno = 0;
  expect(std::malloc(kBig) == nullptr && errno == ENOMEM, "malloc");
  errno = 0;
  expect(std::calloc(1, kBig) == nullptr && errno == ENOMEM, "calloc");
  errno = 0;
  expect(aligned_alloc(4096, kBig) == nullptr && errno == ENOMEM, "aligned_alloc");
  errno = 0;
  expect(memalign(1 << 20, kBig) == nullptr && errno == ENOMEM, "memalign");
  void* out = nullptr;
  expect(posix_memalign(&out, 64, kBig) == ENOMEM && out == nullptr, "posix_memalign");
  errno = 0;
  expect(std::realloc(launder(kept), kBig) == nullptr && errno == ENOMEM, "realloc");
  expect(static_cast<unsigned char*>(kept)[99] == 7 && malloc_usable_size(kept) >= 100,
         "realloc left the block intact");
  expect(throws_bad_alloc([] { launder(new char[kBig]); }), "new[] throws std::bad_alloc");
  expect(throws_bad_alloc([] { launder(::operator new(kBig, std::align_val_t(4096))); }),
         "aligned new throws std::bad_alloc");
  expect(new (std::nothrow) char[kBig] == nullptr, "nothrow new returns null");

  // Fill the remaining room with small and medium blocks until refused.
  std::vector<void*> blocks;
  blocks.reserve(1 << 20);
  for (size_t i = 0;; ++i) {
    errno = 0;
    void* p = std::malloc(i % 2 ? 1000 : 40000);
    if (!p) {
      expect(errno == ENOMEM, "small malloc fails with ENOMEM");
      break;
    }
    std::memset(p, 1, i % 2 ? 1000 : 40000);
    blocks.push_back(p);
  }
  expect(blocks.size() > 100, "small blocks filled the room");
  for (void* p : blocks) std::free(p);
  blocks.clear();

  // Memory comes back.
  setrlimit(RLIMIT_AS, &old);
  auto* big = static_cast<char*>(std::malloc(kBig));
  expect(big != nullptr, "malloc after the limit is lifted");
  if (big) {
    std::memset(big, 3, kBig);
    std::free(big);
  }
  char* arr = nullptr;
  expect(!throws_bad_alloc([&] { arr = new char[kBig]; }), "new after the limit is lifted");
  delete[] arr;
  for (int i = 0; i < 100000; ++i) blocks.push_back(std::malloc(size_t(i % 5000) + 1));
  for (void* p : blocks) expect(p != nullptr, "small malloc after the limit is lifted");
  for (void* p : blocks) std::free(p);
  std::free(kept);
  if (failures == 0) std::puts("OOM OK");
  return failures ? 1 : 0;
}
