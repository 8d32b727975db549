// The thread-local heap pointer on Windows, without mingw's emutls (whose
// __emutls_get_address calls malloc). One TlsAlloc slot, read straight from
// the thread environment block:
//   TEB+0x1480: TlsSlots[64]          (indexes 0..63)
//   TEB+0x1780: TlsExpansionSlots      (pointer to 1024 more, or null)
// The read is one gs-relative load for indexes below 64 and never touches
// GetLastError (TlsGetValue resets it to 0, which a malloc must not do).
// Windows x64 only; the Linux build uses an initial-exec thread_local.
#pragma once

#include <cstdint>

#if !defined(_WIN64)
#error "tls_windows.h is for 64-bit Windows"
#endif

namespace granule::os {

inline constexpr unsigned long kTlsNoIndex = 0xFFFFFFFFul;  // TLS_OUT_OF_INDEXES
inline constexpr unsigned long kTebTlsSlots = 0x1480;
inline constexpr unsigned long kTebTlsExpansionSlots = 0x1780;

// The slot index; kTlsNoIndex until tls_heap_init() succeeded.
extern unsigned long g_tls_heap_index;

// Allocate the slot (idempotent, thread-safe). Call once before the first
// tls_get_heap, e.g. at DLL attach or on the allocator's first slow path.
bool tls_heap_init();
// TlsSetValue, for indexes >= 64 (allocates the expansion block if needed).
void tls_set_heap_slow(void* heap);

inline void* tls_get_heap() {
  const unsigned long index = g_tls_heap_index;
  void* value;
  if (__builtin_expect(index < 64, 1)) {
    __asm__ volatile("movq %%gs:(%1), %0"
                     : "=r"(value)
                     : "r"(uintptr_t(kTebTlsSlots) + uintptr_t(index) * 8));
    return value;
  }
  if (index == kTlsNoIndex) return nullptr;
  void** expansion;
  __asm__ volatile("movq %%gs:(%1), %0" : "=r"(expansion) : "r"(uintptr_t(kTebTlsExpansionSlots)));
  return expansion ? expansion[index - 64] : nullptr;
}

inline void tls_set_heap(void* heap) {
  const unsigned long index = g_tls_heap_index;
  if (__builtin_expect(index < 64, 1)) {
    __asm__ volatile("movq %0, %%gs:(%1)"
                     :
                     : "r"(heap), "r"(uintptr_t(kTebTlsSlots) + uintptr_t(index) * 8)
                     : "memory");
    return;
  }
  tls_set_heap_slow(heap);
}

}  // namespace granule::os
