#include "meta.h"

#include "os/os.h"
#include "stats.h"
#include "sync.h"

namespace granule {
namespace {
SlowLock g_meta_lock;
char* g_meta_cur = nullptr;
char* g_meta_end = nullptr;
constexpr size_t kMetaChunk = 256 * 1024;
}  // namespace

void* meta_alloc(size_t size) {
  size = (size + 63) & ~size_t{63};
  LockGuard guard(g_meta_lock);
  if (size_t(g_meta_end - g_meta_cur) < size) {
    size_t chunk = size > kMetaChunk ? (size + kMetaChunk - 1) & ~(kMetaChunk - 1) : kMetaChunk;
    size_t gran = os::info().granularity;
    char* p = static_cast<char*>(os::reserve(chunk, gran));
    if (!p) return nullptr;
    if (!os::commit(p, chunk)) {
      os::release(p, chunk);
      return nullptr;
    }
    g_stats.reserved.add(chunk);
    g_stats.committed.add(chunk);
    g_meta_cur = p;
    g_meta_end = p + chunk;
  }
  void* r = g_meta_cur;
  g_meta_cur += size;
  return r;
}

void meta_lock() { g_meta_lock.lock(); }

void meta_unlock(bool in_child) {
  if (in_child)
    g_meta_lock.reset();
  else
    g_meta_lock.unlock();
}

}  // namespace granule
