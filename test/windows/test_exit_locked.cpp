// ExitProcess kills every other thread wherever it stands, then runs the
// exiting thread's FLS callbacks and the DLLs' detach code, which free
// memory too. Neither Granule's thread-exit hook nor those frees may wait
// for a lock a killed thread held (the purge thread, say, in the middle of
// a decommit), or the process never ends.
//   test-win-exit-locked          runs itself once per lock below, each time
//                                 with a time limit
//   test-win-exit-locked LOCK EVENT
//                                 main and a second thread allocate; the
//                                 thread takes LOCK and sleeps; main returns
//                                 7, and an FLS callback frees every block
//                                 after the thread was killed, then sets
//                                 EVENT (an inherited handle)
#define WIN32_LEAN_AND_MEAN
#include <windows.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "granule.h"
#include "heap.h"

namespace {

granule::SlowLock* g_target = nullptr;
HANDLE g_taken = nullptr;
HANDLE g_freed = nullptr;  // the parent's: set once free_all got through

constexpr int kBlocks = 4000;
void* g_mine[kBlocks];    // main's: its slabs empty at exit (local frees)
void* g_theirs[kBlocks];  // the killed thread's: its full slabs empty (remote frees)
void* g_huge = nullptr;

DWORD WINAPI hold(LPVOID) {
  for (int i = 0; i < kBlocks; ++i) g_theirs[i] = gr_malloc(256);
  g_target->lock();
  SetEvent(g_taken);
  Sleep(INFINITE);
  return 0;
}

void WINAPI free_all(void*) {
  for (void* p : g_mine) gr_free(p);
  for (void* p : g_theirs) gr_free(p);
  gr_free(g_huge);
  SetEvent(g_freed);
}

int child(const char* which, const char* event) {
  g_freed = reinterpret_cast<HANDLE>(std::strtoull(event, nullptr, 10));
  // A heap with slabs to hand over at exit: some blocks live, some freed.
  for (int i = 0; i < kBlocks; ++i) g_mine[i] = gr_malloc(16 + size_t(i % 300) * 8);
  for (int i = 0; i < kBlocks; i += 2) {
    gr_free(g_mine[i]);
    g_mine[i] = nullptr;
  }
  g_huge = gr_malloc(size_t(8) << 20);
  granule::Heap* mine = granule::heap_current();
  if (std::strcmp(which, "segments") == 0)
    g_target = &granule::g_thread_segments.lock;
  else if (std::strcmp(which, "heap") == 0)
    g_target = &mine->lock;
  else
    return 2;
  g_taken = CreateEventW(nullptr, TRUE, FALSE, nullptr);
  HANDLE t = CreateThread(nullptr, 0, hold, nullptr, 0, nullptr);
  if (!t || WaitForSingleObject(g_taken, 10000) != WAIT_OBJECT_0) return 3;
  DWORD index = FlsAlloc(free_all);
  if (index == FLS_OUT_OF_INDEXES || !FlsSetValue(index, g_mine)) return 4;
  return 7;  // the C runtime's exit, then ExitProcess, with the lock held
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3) return child(argv[1], argv[2]);
  wchar_t self[MAX_PATH];
  GetModuleFileNameW(nullptr, self, MAX_PATH);
  int failures = 0;
  for (const wchar_t* lock : {L"segments", L"heap"}) {
    SECURITY_ATTRIBUTES inherit = {sizeof inherit, nullptr, TRUE};
    HANDLE freed = CreateEventW(&inherit, TRUE, FALSE, nullptr);
    wchar_t cmd[2 * MAX_PATH];
    std::swprintf(cmd, 2 * MAX_PATH, L"\"%ls\" %ls %llu", self, lock,
                  static_cast<unsigned long long>(reinterpret_cast<uintptr_t>(freed)));
    STARTUPINFOW si = {};
    si.cb = sizeof si;
    PROCESS_INFORMATION pi = {};
    if (!CreateProcessW(nullptr, cmd, nullptr, nullptr, TRUE, 0, nullptr, nullptr, &si, &pi)) {
      std::printf("FAIL %ls: could not start\n", lock);
      ++failures;
      CloseHandle(freed);
      continue;
    }
    DWORD code = 0;
    const bool ended = WaitForSingleObject(pi.hProcess, 15000) == WAIT_OBJECT_0;
    if (ended)
      GetExitCodeProcess(pi.hProcess, &code);
    else
      TerminateProcess(pi.hProcess, 99);
    const bool frees_done = WaitForSingleObject(freed, 0) == WAIT_OBJECT_0;
    const bool ok = ended && code == 7 && frees_done;
    std::printf(
        "%s exit with %ls lock held by a killed thread: %s (exit code %lu), frees after "
        "the kill %s\n",
        ok ? "ok  " : "FAIL", lock, ended ? "ended" : "still running after 15 s",
        (unsigned long)code, frees_done ? "done" : "not done");
    CloseHandle(freed);
    failures += !ok;
    CloseHandle(pi.hThread);
    CloseHandle(pi.hProcess);
  }
  return failures ? 1 : 0;
}
