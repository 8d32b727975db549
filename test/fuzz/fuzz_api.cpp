// libFuzzer harness: the input is a program of gr_* calls, run against a
// shadow model that knows every live block's size, alignment, owner heap and
// contents. Built by scripts/fuzz with clang -fsanitize=fuzzer,address; the
// allocator under test is called directly (ASan owns the process malloc).
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "granule.h"

namespace {

constexpr int kSlots = 64;
constexpr int kHeaps = 3;

struct Live {
  uint8_t* p = nullptr;
  size_t size = 0;
  size_t align = 16;
  uint8_t seed = 0;
  gr_heap_t* heap = nullptr;
};

struct Input {
  const uint8_t* data;
  size_t size, pos = 0;
  bool more() const { return pos < size; }
  uint8_t byte() { return pos < size ? data[pos++] : 0; }
  uint32_t u16() { return uint32_t(byte()) | uint32_t(byte()) << 8; }
};

[[noreturn]] void die(const char* what, const Live& l) {
  std::fprintf(stderr, "fuzz_api: %s (p=%p size=%zu align=%zu)\n", what, static_cast<void*>(l.p),
               l.size, l.align);
  std::abort();
}

inline uint8_t pat(uint8_t seed, size_t i) { return uint8_t(seed + i * 13 + (i >> 8)); }

// Big blocks: only the first and last 4 KiB, so a run stays fast.
template <class Fn>
void for_checked(size_t n, Fn fn) {
  if (n <= 16384) {
    for (size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  for (size_t i = 0; i < 4096; ++i) fn(i);
  for (size_t i = n - 4096; i < n; ++i) fn(i);
}

void fill(Live& l) {
  for_checked(l.size, [&](size_t i) { l.p[i] = pat(l.seed, i); });
}

// The bytes fill() wrote below `upto`.
void verify(const Live& l, size_t upto) {
  for_checked(l.size, [&](size_t i) {
    if (i < upto && l.p[i] != pat(l.seed, i)) die("contents changed", l);
  });
}

void check_new(const Live& l) {
  if (uintptr_t(l.p) % l.align || uintptr_t(l.p) % 16) die("misaligned", l);
  if (gr_usable_size(l.p) < l.size) die("usable size below request", l);
  if (!gr_owns(l.p)) die("block not owned", l);
  if (gr_heap_of(l.p) != l.heap) die("wrong owner heap", l);
}

size_t pick_size(Input& in) {
  uint8_t kind = in.byte();
  uint32_t v = in.u16();
  if (kind < 160) return v % 1025;              // the direct table
  if (kind < 230) return v % (128 * 1024 + 1);  // small and medium classes
  if (kind < 250) return 128 * 1024 + v * 24;   // large spans (up to ~1.7 MiB)
  return (4u << 20) + v;                        // huge: own mapping
}

// A second thread: frees blocks the main thread hands it (remote frees), or
// allocates blocks the main thread then owns and frees (cross-thread both ways).
struct Worker {
  std::mutex m;
  std::condition_variable cv;
  std::vector<Live> to_free;
  size_t alloc_size = 0;
  Live made;
  bool busy = false, stop = false;
  std::thread t{[this] { run(); }};

  void run() {
    std::unique_lock<std::mutex> lock(m);
    for (;;) {
      cv.wait(lock, [&] { return busy || stop; });
      if (stop) return;
      for (Live& l : to_free) {
        verify(l, l.size);
        gr_free(l.p);
      }
      to_free.clear();
      if (alloc_size) {
        made = Live{};
        made.size = alloc_size;
        made.p = static_cast<uint8_t*>(gr_malloc(alloc_size));
        alloc_size = 0;
      }
      busy = false;
      cv.notify_all();
    }
  }
  // Hand over and wait: the model stays single-threaded.
  void go() {
    std::unique_lock<std::mutex> lock(m);
    busy = true;
    cv.notify_all();
    cv.wait(lock, [&] { return !busy; });
  }
  ~Worker() {
    {
      std::lock_guard<std::mutex> lock(m);
      stop = true;
      cv.notify_all();
    }
    t.join();
  }
};

Worker& worker() {
  static Worker* w = new Worker;  // lives for the whole process
  return *w;
}

void release(Live& l) {
  verify(l, l.size);
  if (l.size && (l.p[0] & 1))
    gr_free_sized(l.p, l.size);
  else
    gr_free(l.p);
  l = Live{};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Live slots[kSlots];
  gr_heap_t* heaps[kHeaps] = {};
  Input in{data, size};
  uint8_t seed = 1;
  while (in.more()) {
    uint8_t op = in.byte() % 16;
    Live& l = slots[in.byte() % kSlots];
    if (l.p && op <= 4) release(l);  // allocation ops reuse the slot
    switch (op) {
      case 0: {  // malloc
        l.size = pick_size(in);
        l.p = static_cast<uint8_t*>(gr_malloc(l.size));
        break;
      }
      case 1: {  // calloc (sometimes overflowing)
        size_t n = in.byte() + 1, each = pick_size(in) / n;
        if (in.byte() == 255) {
          errno = 0;
          if (gr_calloc(SIZE_MAX / 2, 3) != nullptr || errno != ENOMEM) die("calloc overflow", l);
          continue;
        }
        l.size = n * each;
        l.p = static_cast<uint8_t*>(gr_calloc(n, each));
        if (!l.p) die("calloc failed", l);
        for_checked(l.size, [&](size_t i) {
          if (l.p[i]) die("calloc not zero", l);
        });
        break;
      }
      case 2: {  // aligned_alloc
        l.align = size_t(1) << (in.byte() % 21);
        l.size = pick_size(in);
        l.p = static_cast<uint8_t*>(gr_aligned_alloc(l.align, l.size));
        if (l.align < 16) l.align = 16;
        break;
      }
      case 3: {  // posix_memalign, also with invalid alignments
        size_t align = size_t(1) << (in.byte() % 21);
        if (in.byte() < 16) {
          void* out = &l;
          if (gr_posix_memalign(&out, align * 3, 64) != EINVAL || out != &l)
            die("memalign EINVAL", l);
          continue;
        }
        l.size = pick_size(in);
        l.align = align < sizeof(void*) ? sizeof(void*) : align;
        void* out = nullptr;
        if (gr_posix_memalign(&out, l.align, l.size) != 0) die("posix_memalign failed", l);
        l.p = static_cast<uint8_t*>(out);
        if (l.align < 16) l.align = 16;
        break;
      }
      case 4: {  // first-class heap allocation
        int hi = in.byte() % kHeaps;
        if (!heaps[hi]) heaps[hi] = gr_heap_create(nullptr);
        l.heap = heaps[hi];
        l.size = pick_size(in);
        if (in.byte() & 1) {
          l.align = size_t(1) << (in.byte() % 16);
          l.p = static_cast<uint8_t*>(gr_heap_aligned_alloc(l.heap, l.align, l.size));
          if (l.align < 16) l.align = 16;
        } else {
          l.p = static_cast<uint8_t*>(gr_heap_malloc(l.heap, l.size));
        }
        break;
      }
      case 5:
      case 6:  // free
        if (l.p) release(l);
        continue;
      case 7: {  // realloc: contents kept up to the smaller size
        if (!l.p) continue;
        size_t n = pick_size(in);
        if (n == 0) n = 1;
        void* q = l.heap ? gr_heap_realloc(l.heap, l.p, n) : gr_realloc(l.p, n);
        if (!q) die("realloc failed", l);
        l.p = static_cast<uint8_t*>(q);
        verify(l, n < l.size ? n : l.size);
        l.size = n;
        l.align = 16;
        check_new(l);
        fill(l);
        continue;
      }
      case 8: {  // usable size and ownership of a live block
        if (!l.p) continue;
        size_t u = gr_usable_size(l.p);
        if (u < l.size) die("usable size", l);
        l.p[u - 1] = l.p[u - 1];  // the whole usable size is ours
        continue;
      }
      case 9: {  // destroy a heap: its blocks go with it
        int hi = in.byte() % kHeaps;
        if (!heaps[hi]) continue;
        for (Live& s : slots)
          if (s.p && s.heap == heaps[hi]) s = Live{};
        gr_heap_destroy(heaps[hi]);
        heaps[hi] = nullptr;
        continue;
      }
      case 10: {  // hand blocks to another thread, which checks and frees them
        Worker& w = worker();
        uint8_t mask = in.byte();
        for (int i = 0; i < kSlots; i += 8) {
          Live& s = slots[(i + mask) % kSlots];
          if (s.p) {
            w.to_free.push_back(s);
            s = Live{};
          }
        }
        w.go();
        continue;
      }
      case 11: {  // a block made by another thread, owned and freed here
        if (l.p) release(l);
        Worker& w = worker();
        w.alloc_size = pick_size(in) + 1;
        w.go();
        l = w.made;
        break;
      }
      case 12: {  // reallocarray / aligned_realloc
        if (!l.p || l.heap) continue;
        size_t n = pick_size(in) + 1;
        void* q;
        if (in.byte() & 1) {
          q = gr_reallocarray(l.p, 1, n);
          l.align = 16;
        } else {
          size_t align = size_t(1) << (in.byte() % 13);
          q = gr_aligned_realloc(l.p, align, n);
          l.align = align < 16 ? 16 : align;
        }
        if (!q) die("realloc variant failed", l);
        l.p = static_cast<uint8_t*>(q);
        verify(l, n < l.size ? n : l.size);
        l.size = n;
        check_new(l);
        fill(l);
        continue;
      }
      case 13: {  // impossible requests fail cleanly
        errno = 0;
        if (gr_malloc(SIZE_MAX - in.byte()) != nullptr || errno != ENOMEM) die("huge malloc", l);
        continue;
      }
      default: {  // verify everything
        for (Live& s : slots)
          if (s.p) verify(s, s.size);
        continue;
      }
    }
    if (!l.p) die("allocation failed", l);
    l.seed = seed++;
    check_new(l);
    fill(l);
  }
  for (Live& l : slots)
    if (l.p) release(l);
  for (gr_heap_t* h : heaps)
    if (h) gr_heap_destroy(h);
  return 0;
}
