// granule.dll's entry point. Attach: start Granule, pin the DLL (patched
// runtimes and thread-exit callbacks point into it, so it must never be
// unmapped), redirect the C runtimes. Detach never tears anything down:
// blocks still live and the runtimes stay patched until the process is gone.
#define WIN32_LEAN_AND_MEAN
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>

#include "crt_redirect.h"
#include "granule.h"
#include "init.h"
#include "report.h"

extern "C" BOOL WINAPI DllMain(HINSTANCE, DWORD reason, LPVOID reserved) {
  if (reason == DLL_PROCESS_ATTACH) {
    HMODULE self = nullptr;
    GetModuleHandleExW(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_PIN,
                       reinterpret_cast<LPCWSTR>(&DllMain), &self);
    granule::process_start();
    if (gr_option_get(GR_OPTION_DISABLE_REDIRECT) == 1)
      granule::report_verbose("GRANULE_DISABLE_REDIRECT: the C runtimes are left alone");
    else
      granule::win::crt_redirect_start();
  } else if (reason == DLL_PROCESS_DETACH && reserved) {
    // Process exit (not FreeLibrary, which pinning makes a no-op).
    granule::process_exit();
  }
  return TRUE;
}
