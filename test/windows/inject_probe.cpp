// A stand-in for granule.dll in the injector test: when loaded, it leaves a
// mark in the process environment (kernel32 only, no C runtime needed).
#define WIN32_LEAN_AND_MEAN
#include <windows.h>

extern "C" BOOL WINAPI DllMain(HINSTANCE, DWORD reason, LPVOID) {
  if (reason == DLL_PROCESS_ATTACH) SetEnvironmentVariableW(L"GRANULE_PROBE_LOADED", L"1");
  return TRUE;
}
