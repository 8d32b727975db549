// A DLL linked with -nostdlib (no C runtime, no libgcc/libstdc++ start-up):
// the OS layer, the TLS slot and the patcher must work in it, as they will in
// granule.dll, which should import kernel32 only so it can initialise before
// msvcrt/ucrtbase and never pull msvcrt into a UCRT process.
#define WIN32_LEAN_AND_MEAN
#include <windows.h>

#include "os/os.h"
#include "os/tls_windows.h"
#include "patch.h"

namespace os = granule::os;

extern "C" BOOL WINAPI crt_free_probe_entry(HINSTANCE, DWORD reason, LPVOID) {
  if (reason == DLL_PROCESS_ATTACH) os::tls_heap_init();
  return TRUE;
}

namespace {
int replacement(int x) { return x + 100; }
}  // namespace

// 0 when everything works; otherwise the number of the first failed step.
extern "C" __declspec(dllexport) int crt_free_probe_run(int (*patch_me)(int)) {
  const size_t seg = size_t(4) << 20;
  char* p = static_cast<char*>(os::reserve(seg, seg));
  if (!p || (uintptr_t(p) & (seg - 1)) != 0) return 1;
  if (!os::commit(p, 65536)) return 2;
  p[0] = 1;
  p[65535] = 2;
  os::decommit(p, 65536);
  os::tls_set_heap(p);
  if (os::tls_get_heap() != p) return 3;
  os::tls_set_heap(nullptr);
  os::release(p, seg);
  if (os::getenv_raw("GRANULE_CRT_FREE_PROBE") == nullptr) return 4;
  void* original = nullptr;
  if (granule::win::patch_function(reinterpret_cast<void*>(patch_me),
                                   reinterpret_cast<void*>(&replacement),
                                   &original) != granule::win::PatchStatus::kOk)
    return 5;
  if (patch_me(1) != 101) return 6;
  if (reinterpret_cast<int (*)(int)>(original)(1) != 2) return 7;
  return 0;
}
