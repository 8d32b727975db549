// Heap errors a program can make, one per run, for test/suites/errors.sh.
// Uses plain malloc/free so the library under test comes from LD_PRELOAD.
// Prints "ADDR <p>" (the pointer the error is about) before the error, and
// "HEAP OK" when the heap still works afterwards: the hardened build must
// abort before that, the default build must get there.
#include <malloc.h>
#include <pthread.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

// Hide the pointer's origin from the compiler, which would otherwise warn
// about (or fold away) the deliberate misuse.
void* launder(void* p) {
  void* volatile v = p;
  return v;
}

void announce(const void* p) {
  std::printf("ADDR %p\n", p);
  std::fflush(stdout);
}

void fail(const char* what) {
  std::printf("HEAP BROKEN: %s\n", what);
  std::exit(2);
}

uint8_t pattern(size_t block, size_t i) { return uint8_t(block * 131 + i * 7 + 1); }

// Many blocks of many sizes live at once, each filled with its own pattern,
// all checked after all are allocated: overlapping or duplicated blocks show.
void verify_heap(size_t probe_size) {
  // A block freed twice must not come back twice.
  void* a = std::malloc(probe_size);
  void* b = std::malloc(probe_size);
  if (!a || !b || a == b) fail("the same block handed out twice");
  std::vector<void*> blocks;
  std::vector<size_t> sizes;
  for (size_t i = 0; i < 20000; ++i) {
    size_t n = i % 97 == 0 ? 150000 + i : i % 1000 == 1 ? (5u << 20) : 1 + (i * 37) % 3000;
    auto* p = static_cast<uint8_t*>(std::malloc(n));
    if (!p) fail("malloc returned null");
    if (uintptr_t(p) % 16) fail("misaligned block");
    if (malloc_usable_size(p) < n) fail("usable size below request");
    for (size_t k = 0; k < n; ++k) p[k] = pattern(i, k);
    blocks.push_back(p);
    sizes.push_back(n);
  }
  for (size_t i = 0; i < blocks.size(); ++i) {
    auto* p = static_cast<uint8_t*>(blocks[i]);
    for (size_t k = 0; k < sizes[i]; ++k)
      if (p[k] != pattern(i, k)) fail("block contents changed");
  }
  for (size_t i = blocks.size(); i-- > 0;) std::free(blocks[i]);
  std::free(a);
  std::free(b);
  std::puts("HEAP OK");
}

void* free_in_thread(void* p) {
  std::free(p);
  return nullptr;
}

void double_free(size_t n) {
  void* p = std::malloc(n);
  std::memset(p, 1, n);
  announce(p);
  std::free(p);
  std::free(launder(p));
  verify_heap(n);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: errors SCENARIO\n");
    return 64;
  }
  const char* what = argv[1];
  if (!std::strcmp(what, "double-free-small")) {
    double_free(40);
  } else if (!std::strcmp(what, "double-free-large")) {
    double_free(300000);
  } else if (!std::strcmp(what, "double-free-large-reused")) {
    // The freed span's other slices serve the next span at once; the second
    // free of the first must still be caught, and the new block left alone.
    void* p = std::malloc(400000);
    std::memset(p, 1, 400000);
    announce(p);
    std::free(p);
    auto* q = static_cast<uint8_t*>(std::malloc(200000));
    std::memset(q, 0x5a, 200000);
    std::free(launder(p));
    auto* r = static_cast<uint8_t*>(std::malloc(200000));
    std::memset(r, 0xa5, 200000);
    for (size_t k = 0; k < 200000; ++k)
      if (q[k] != 0x5a) fail("a block reusing the freed span was freed by the second free");
    std::free(r);
    std::free(q);
    verify_heap(400000);
  } else if (!std::strcmp(what, "double-free-huge")) {
    double_free(8u << 20);
  } else if (!std::strcmp(what, "double-free-cross-thread")) {
    // Freed by one thread (onto the owner's remote list), then again by another.
    std::vector<void*> keep;
    for (int i = 0; i < 8; ++i) keep.push_back(std::malloc(40));  // the slab stays live
    void* p = std::malloc(40);
    announce(p);
    pthread_t t;
    pthread_create(&t, nullptr, free_in_thread, p);
    pthread_join(t, nullptr);
    pthread_create(&t, nullptr, free_in_thread, launder(p));
    pthread_join(t, nullptr);
    verify_heap(40);
    for (void* k : keep) std::free(k);
  } else if (!std::strcmp(what, "free-stack")) {
    alignas(16) char buf[64];
    std::memset(buf, 0, sizeof buf);
    announce(buf + 16);
    std::free(launder(buf + 16));
    verify_heap(64);
  } else if (!std::strcmp(what, "free-interior")) {
    auto* p = static_cast<char*>(std::malloc(64));
    announce(p + 16);
    std::free(launder(p + 16));
    std::free(p);  // the real block is still live and frees normally
    verify_heap(64);
  } else if (!std::strcmp(what, "overflow")) {
    // 24 bytes: the hardened build's usable size is exactly that, so the
    // byte written lands on its canary; the default build's block has room.
    auto* p = static_cast<char*>(std::malloc(24));
    announce(p);
    static_cast<char*>(launder(p))[24] = 'x';
    std::free(p);
    verify_heap(24);
  } else if (!std::strcmp(what, "write-after-free")) {
    auto* p = static_cast<char*>(std::malloc(64));
    announce(p);
    std::free(p);
    static_cast<char*>(launder(p))[24] = 'x';
    std::vector<void*> again;
    for (int i = 0; i < 256; ++i) again.push_back(std::malloc(64));  // one of them is p
    for (void* q : again) std::free(q);
    verify_heap(64);
  } else {
    std::fprintf(stderr, "unknown scenario %s\n", what);
    return 64;
  }
  return 0;
}
