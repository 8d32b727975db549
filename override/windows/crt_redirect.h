// Redirection of the C runtimes' allocation functions to Granule (the "DLL
// detours" path): msvcrt.dll, ucrtbase.dll and msvcr80..120.dll, now and when
// they are loaded later. Patches are permanent.
#pragma once

namespace granule::win {

// Patch every C runtime loaded now and watch for later ones. Call once, from
// granule.dll's process attach. GRANULE_VERBOSE=1 lists each function patched
// or skipped, and why.
void crt_redirect_start();

}  // namespace granule::win
