// The Windows OS layer under Wine: granularity, aligned reservations, commit
// and decommit as VirtualQuery sees them, the clock, waiting, threads, the
// thread-exit callback, getenv_raw and the TEB-based thread-local slot.
#define WIN32_LEAN_AND_MEAN
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>

#include <catch2/catch.hpp>

#include <atomic>
#include <cstring>

#include "os/os.h"
#include "os/tls_windows.h"

namespace os = granule::os;

namespace {

MEMORY_BASIC_INFORMATION query(const void* p) {
  MEMORY_BASIC_INFORMATION m;
  REQUIRE(VirtualQuery(p, &m, sizeof m) == sizeof m);
  return m;
}

// Committed bytes in [p, p+size), walking VirtualQuery regions.
size_t committed_bytes(const void* p, size_t size) {
  size_t total = 0;
  const char* at = static_cast<const char*>(p);
  const char* end = at + size;
  while (at < end) {
    MEMORY_BASIC_INFORMATION m = query(at);
    const char* region_end = static_cast<const char*>(m.BaseAddress) + m.RegionSize;
    if (region_end > end) region_end = end;
    if (m.State == MEM_COMMIT) total += size_t(region_end - at);
    at = region_end;
  }
  return total;
}

}  // namespace

TEST_CASE("page size and granularity come from GetSystemInfo", "[os]") {
  const os::Info& info = os::info();
  CHECK(info.page_size == 4096);
  CHECK(info.granularity == 65536);
  CHECK(&os::info() == &info);
}

TEST_CASE("reservations are aligned and start uncommitted", "[os]") {
  for (size_t alignment : {size_t(64) << 10, size_t(1) << 20, size_t(4) << 20, size_t(32) << 20}) {
    for (int i = 0; i < 8; ++i) {
      const size_t size = alignment * 2;
      void* p = os::reserve(size, alignment);
      REQUIRE(p != nullptr);
      CHECK((uintptr_t(p) & (alignment - 1)) == 0);
      MEMORY_BASIC_INFORMATION m = query(p);
      CHECK(m.AllocationBase == p);
      CHECK(m.State == MEM_RESERVE);
      CHECK(committed_bytes(p, size) == 0);
      os::release(p, size);
      CHECK(query(p).State == MEM_FREE);
    }
  }
}

TEST_CASE("commit and decommit change the committed size", "[os]") {
  const size_t seg = size_t(4) << 20;
  char* p = static_cast<char*>(os::reserve(seg, seg));
  REQUIRE(p);
  REQUIRE(os::commit(p + 65536, 3 * 4096));
  CHECK(committed_bytes(p, seg) == 3 * 4096);
  std::memset(p + 65536, 0x5A, 3 * 4096);  // usable
  CHECK(query(p + 65536).Protect == PAGE_READWRITE);
  REQUIRE(os::commit(p + seg - 4096, 4096));
  CHECK(committed_bytes(p, seg) == 4 * 4096);
  os::decommit(p + 65536, 2 * 4096);
  CHECK(committed_bytes(p, seg) == 2 * 4096);
  CHECK(query(p + 65536).State == MEM_RESERVE);
  // Re-committed pages come back zeroed.
  REQUIRE(os::commit(p + 65536, 4096));
  CHECK(p[65536] == 0);
  CHECK(p[65536 + 2 * 4096] == 0x5A);
  os::release(p, seg);
}

TEST_CASE("guard pages: protect_none / protect_rw", "[os]") {
  char* p = static_cast<char*>(os::reserve(65536, 65536));
  REQUIRE(os::commit(p, 65536));
  os::protect_none(p + 4096, 4096);
  CHECK(query(p + 4096).Protect == PAGE_NOACCESS);
  os::protect_rw(p + 4096, 4096);
  CHECK(query(p + 4096).Protect == PAGE_READWRITE);
  p[4096] = 1;
  // protect_rw on never-committed pages commits them.
  char* q = static_cast<char*>(os::reserve(65536, 65536));
  os::protect_rw(q, 4096);
  CHECK(query(q).State == MEM_COMMIT);
  q[0] = 1;
  os::release(p, 65536);
  os::release(q, 65536);
}

TEST_CASE("fail_after makes the n-th reserve or commit fail", "[os]") {
  os::fail_after(2);
  void* a = os::reserve(65536, 65536);
  CHECK(a != nullptr);
  CHECK(!os::commit(a, 4096));
  CHECK(os::commit(a, 4096));  // off again
  os::release(a, 65536);
  os::fail_after(1);
  CHECK(os::reserve(65536, 65536) == nullptr);
  os::fail_after(0);
}

TEST_CASE("the OS layer leaves GetLastError alone", "[os]") {
  SetLastError(12345);
  void* p = os::reserve(65536, 1 << 20);
  os::commit(p, 4096);
  os::decommit(p, 4096);
  os::getenv_raw("GRANULE_SURELY_NOT_SET_ANYWHERE");
  os::release(p, 65536);
  CHECK(GetLastError() == 12345);
}

TEST_CASE("clock, sleep, yield", "[os]") {
  const uint64_t t0 = os::now_ms();
  os::sleep_ms(30);
  os::yield();
  const uint64_t t1 = os::now_ms();
  CHECK(t1 - t0 >= 25);
  CHECK(t1 - t0 < 2000);
}

namespace {
uint32_t g_word = 0;
std::atomic<int> g_thread_ran{0};

void set_word_later(void*) {
  Sleep(50);
  __atomic_store_n(&g_word, 1, __ATOMIC_RELEASE);
  os::wake(&g_word);
  g_thread_ran.store(1);
}
}  // namespace

TEST_CASE("wait_on / wake and start_thread", "[os]") {
  // Times out when nobody wakes.
  uint64_t t0 = os::now_ms();
  uint32_t idle = 7;
  os::wait_on(&idle, 7, 40);
  CHECK(os::now_ms() - t0 >= 30);
  // Returns at once when the value differs.
  t0 = os::now_ms();
  os::wait_on(&idle, 8, 5000);
  CHECK(os::now_ms() - t0 < 1000);
  // Woken by a helper thread.
  REQUIRE(os::start_thread(set_word_later, nullptr));
  t0 = os::now_ms();
  while (__atomic_load_n(&g_word, __ATOMIC_ACQUIRE) == 0 && os::now_ms() - t0 < 5000) {
    os::wait_on(&g_word, 0, 1000);
  }
  CHECK(g_word == 1);
  CHECK(os::now_ms() - t0 < 3000);
  while (g_thread_ran.load() == 0) Sleep(1);
}

namespace {
std::atomic<int> g_exits{0};
std::atomic<void*> g_exit_value{nullptr};
void on_thread_exit(void* value) {
  g_exit_value.store(value);
  g_exits.fetch_add(1);
}
DWORD WINAPI armed_thread(LPVOID value) {
  os::thread_exit_arm(value);
  return 0;
}
DWORD WINAPI unarmed_thread(LPVOID) { return 0; }
}  // namespace

TEST_CASE("thread exit callback (fiber-local storage)", "[os]") {
  os::thread_exit_register(on_thread_exit);
  static int token;
  HANDLE t = CreateThread(nullptr, 0, armed_thread, &token, 0, nullptr);
  REQUIRE(t);
  WaitForSingleObject(t, INFINITE);
  CloseHandle(t);
  CHECK(g_exits.load() == 1);
  CHECK(g_exit_value.load() == &token);
  t = CreateThread(nullptr, 0, unarmed_thread, nullptr, 0, nullptr);
  WaitForSingleObject(t, INFINITE);
  CloseHandle(t);
  CHECK(g_exits.load() == 1);  // not armed: no call
}

TEST_CASE("getenv_raw reads the process environment without the CRT", "[os]") {
  SetEnvironmentVariableA("GRANULE_TEST_OPTION", "42");
  const char* v = os::getenv_raw("GRANULE_TEST_OPTION");
  REQUIRE(v);
  CHECK(std::strcmp(v, "42") == 0);
  CHECK(os::getenv_raw("GRANULE_TEST_OPTION") == v);  // same value: same pointer
  SetEnvironmentVariableA("GRANULE_TEST_OPTION", "7");
  const char* w = os::getenv_raw("GRANULE_TEST_OPTION");
  REQUIRE(w);
  CHECK(std::strcmp(w, "7") == 0);
  CHECK(std::strcmp(v, "42") == 0);  // earlier pointers stay valid
  SetEnvironmentVariableA("GRANULE_TEST_EMPTY", "");
  const char* e = os::getenv_raw("GRANULE_TEST_EMPTY");
  REQUIRE(e);
  CHECK(*e == 0);
  CHECK(os::getenv_raw("GRANULE_TEST_UNSET_XYZ") == nullptr);
  // Many reads of the same values don't exhaust the arena.
  for (int i = 0; i < 10000; ++i) REQUIRE(os::getenv_raw("GRANULE_TEST_OPTION") == w);
}

TEST_CASE("misc: seed, pid, stderr", "[os]") {
  CHECK(os::random_seed() != os::random_seed());
  CHECK((os::random_seed() & 1) == 1);
  CHECK(os::process_id() == GetCurrentProcessId());
  os::write_stderr("os_windows: write_stderr works\n", 31);
  os::atfork_register(nullptr, nullptr, nullptr);
  os::advise_huge(nullptr, 0);
}

namespace {
DWORD WINAPI tls_thread(LPVOID) {
  // A new thread starts with an empty slot and keeps its own value.
  if (os::tls_get_heap() != nullptr) return 1;
  int mine;
  os::tls_set_heap(&mine);
  if (os::tls_get_heap() != &mine) return 2;
  if (TlsGetValue(os::g_tls_heap_index) != &mine) return 3;
  return 0;
}
}  // namespace

TEST_CASE("thread-local heap slot read through the TEB", "[os][tls]") {
  CHECK(os::tls_get_heap() == nullptr);  // before init: null, no crash
  REQUIRE(os::tls_heap_init());
  REQUIRE(os::tls_heap_init());  // idempotent
  CHECK(os::tls_get_heap() == nullptr);
  int a;
  os::tls_set_heap(&a);
  CHECK(os::tls_get_heap() == &a);
  CHECK(TlsGetValue(os::g_tls_heap_index) == &a);  // the same slot the OS sees
  TlsSetValue(os::g_tls_heap_index, nullptr);
  CHECK(os::tls_get_heap() == nullptr);
  HANDLE t = CreateThread(nullptr, 0, tls_thread, nullptr, 0, nullptr);
  WaitForSingleObject(t, INFINITE);
  DWORD code = 99;
  GetExitCodeThread(t, &code);
  CloseHandle(t);
  CHECK(code == 0);
}

TEST_CASE("expansion slots (index >= 64) through TlsExpansionSlots", "[os][tls]") {
  // Use up the first 64 slots so an index >= 64 comes back.
  DWORD taken[80];
  int n = 0;
  DWORD high = TLS_OUT_OF_INDEXES;
  while (n < 80) {
    DWORD i = TlsAlloc();
    REQUIRE(i != TLS_OUT_OF_INDEXES);
    if (i >= 64) {
      high = i;
      break;
    }
    taken[n++] = i;
  }
  REQUIRE(high >= 64);
  const unsigned long saved = os::g_tls_heap_index;
  os::g_tls_heap_index = high;
  CHECK(os::tls_get_heap() == nullptr);
  int b;
  os::tls_set_heap(&b);
  CHECK(os::tls_get_heap() == &b);
  CHECK(TlsGetValue(high) == &b);
  HANDLE t = CreateThread(nullptr, 0, tls_thread, nullptr, 0, nullptr);
  WaitForSingleObject(t, INFINITE);
  DWORD code = 99;
  GetExitCodeThread(t, &code);
  CloseHandle(t);
  CHECK(code == 0);
  os::g_tls_heap_index = saved;
  TlsFree(high);
  for (int i = 0; i < n; ++i) TlsFree(taken[i]);
}
