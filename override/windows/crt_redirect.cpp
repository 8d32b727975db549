// The C runtimes' allocation entry points, patched to Granule. Each
// replacement maps onto gr_*; pointers Granule does not own (the runtime
// allocated them before the patch) go to the runtime's original function
// through its trampoline, or to HeapFree/HeapSize on the runtime's heap where
// no trampoline could be built. realloc and _recalloc move foreign blocks
// into Granule.
//
// Every runtime gets its own instances of the replacements (a template on the
// runtime's slot), so a foreign pointer reaches the runtime it came from.
#include "crt_redirect.h"

#define WIN32_LEAN_AND_MEAN
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>

#include "aligned_blocks.h"
#include "granule.h"
#include "patch.h"
#include "report.h"

namespace granule::win {
namespace {

enum Fn : unsigned {
  kMalloc,
  kCalloc,
  kRealloc,
  kFree,
  kMsize,
  kExpand,
  kRecalloc,
  kAlignedMalloc,
  kAlignedRealloc,
  kAlignedRecalloc,
  kAlignedFree,
  kAlignedMsize,
  kAlignedOffsetMalloc,
  kAlignedOffsetRealloc,
  kAlignedOffsetRecalloc,
  kNew,        // operator new / new[] (size)
  kNewDbg,     // operator new / new[] (size, block type, file, line)
  kDelete,     // operator delete / delete[] (p)
  kDeleteDbg,  // operator delete / delete[] (p, block type, file, line)
  kFnCount
};

// Patched all together or not at all: a block from one member is released
// by another.
enum Family : unsigned { kHeapFamily, kAlignedFamily, kNewFamily, kFamilyCount };

constexpr Family family_of(Fn f) {
  return f <= kRecalloc ? kHeapFamily : f <= kAlignedOffsetRecalloc ? kAlignedFamily : kNewFamily;
}

// Entries that never hand out a new block: patched first, so no block of ours
// can reach an unpatched free while a family is half done.
constexpr bool releases_only(Fn f) {
  return f == kFree || f == kMsize || f == kExpand || f == kAlignedFree || f == kAlignedMsize ||
         f == kDelete || f == kDeleteDbg;
}

struct Export {
  const char* name;
  Fn fn;
};

// UCRT's _base and _o_ names, and the MSVC-mangled x64 operators new/delete
// that msvcrt and msvcr* export.
constexpr Export kExports[] = {
    {"malloc", kMalloc},
    {"_malloc_base", kMalloc},
    {"_o_malloc", kMalloc},
    {"_o__malloc_base", kMalloc},
    {"calloc", kCalloc},
    {"_calloc_base", kCalloc},
    {"_o_calloc", kCalloc},
    {"_o__calloc_base", kCalloc},
    {"realloc", kRealloc},
    {"_realloc_base", kRealloc},
    {"_o_realloc", kRealloc},
    {"_o__realloc_base", kRealloc},
    {"free", kFree},
    {"_free_base", kFree},
    {"_o_free", kFree},
    {"_o__free_base", kFree},
    {"_msize", kMsize},
    {"_msize_base", kMsize},
    {"_o__msize", kMsize},
    {"_expand", kExpand},
    {"_expand_base", kExpand},
    {"_o__expand", kExpand},
    {"_recalloc", kRecalloc},
    {"_recalloc_base", kRecalloc},
    {"_o__recalloc", kRecalloc},
    {"_aligned_malloc", kAlignedMalloc},
    {"_o__aligned_malloc", kAlignedMalloc},
    {"_aligned_realloc", kAlignedRealloc},
    {"_o__aligned_realloc", kAlignedRealloc},
    {"_aligned_recalloc", kAlignedRecalloc},
    {"_o__aligned_recalloc", kAlignedRecalloc},
    {"_aligned_free", kAlignedFree},
    {"_o__aligned_free", kAlignedFree},
    {"_aligned_msize", kAlignedMsize},
    {"_o__aligned_msize", kAlignedMsize},
    {"_aligned_offset_malloc", kAlignedOffsetMalloc},
    {"_o__aligned_offset_malloc", kAlignedOffsetMalloc},
    {"_aligned_offset_realloc", kAlignedOffsetRealloc},
    {"_o__aligned_offset_realloc", kAlignedOffsetRealloc},
    {"_aligned_offset_recalloc", kAlignedOffsetRecalloc},
    {"_o__aligned_offset_recalloc", kAlignedOffsetRecalloc},
    {"??2@YAPEAX_K@Z", kNew},
    {"??_U@YAPEAX_K@Z", kNew},
    {"??2@YAPEAX_KHPEBDH@Z", kNewDbg},
    {"??_U@YAPEAX_KHPEBDH@Z", kNewDbg},
    {"??3@YAXPEAX@Z", kDelete},
    {"??_V@YAXPEAX@Z", kDelete},
    {"??3@YAXPEAXHPEBDH@Z", kDeleteDbg},
    {"??_V@YAXPEAXHPEBDH@Z", kDeleteDbg},
};
constexpr size_t kExportCount = sizeof kExports / sizeof kExports[0];

constexpr const wchar_t* kRuntimeNames[] = {
    L"msvcrt.dll",   L"ucrtbase.dll", L"msvcr80.dll",  L"msvcr90.dll",
    L"msvcr100.dll", L"msvcr110.dll", L"msvcr120.dll",
};
constexpr unsigned kRuntimeCount = sizeof kRuntimeNames / sizeof kRuntimeNames[0];

struct Runtime {
  HMODULE module = nullptr;
  void* original[kFnCount] = {};      // trampolines; null where none was built
  FARPROC get_heap_handle = nullptr;  // called lazily: the runtime may not be initialised yet
  FARPROC errno_location = nullptr;
};
Runtime g_runtimes[kRuntimeCount];

SRWLOCK g_lock = SRWLOCK_INIT;                  // redirect_runtime and the tables below
void* g_patched[kRuntimeCount * kExportCount];  // entry addresses already redirected
size_t g_patched_count = 0;

// ---- helpers shared by the replacements ----

template <class F>
F original(const Runtime& rt, Fn f) {
  return reinterpret_cast<F>(rt.original[f]);
}

void set_errno(const Runtime& rt, int e) {
  errno = e;  // granule.dll's own runtime, for callers that read it there
  if (rt.errno_location)
    *reinterpret_cast<int* (*)()>(reinterpret_cast<void*>(rt.errno_location))() = e;
}

HANDLE crt_heap(const Runtime& rt) {
  if (!rt.get_heap_handle) return nullptr;
  return reinterpret_cast<HANDLE>(
      reinterpret_cast<intptr_t (*)()>(reinterpret_cast<void*>(rt.get_heap_handle))());
}

// Where Microsoft's _aligned_malloc keeps the address of the underlying block.
void* aligned_saved_base(void* p) {
  void* base;
  std::memcpy(&base, reinterpret_cast<void*>((uintptr_t(p) - sizeof(void*)) & ~(sizeof(void*) - 1)),
              sizeof base);
  return base;
}

void foreign_free(const Runtime& rt, void* p) {
  if (auto f = original<void (*)(void*)>(rt, kFree)) return f(p);
  if (HANDLE h = crt_heap(rt)) HeapFree(h, 0, p);
}

size_t foreign_size(const Runtime& rt, void* p) {
  if (auto f = original<size_t (*)(void*)>(rt, kMsize)) return f(p);
  if (HANDLE h = crt_heap(rt)) return HeapSize(h, 0, p);
  return size_t(-1);
}

// Move a foreign block of `old` bytes into a new Granule block of `size`
// bytes (zeroing the tail when asked); the runtime frees the old one.
void* migrate(const Runtime& rt, void* p, size_t old, size_t size, bool zero_tail) {
  void* q = gr_malloc(size);
  if (!q) {
    set_errno(rt, ENOMEM);
    return nullptr;  // p stays valid, as realloc promises
  }
  const size_t keep = old < size ? old : size;
  std::memcpy(q, p, keep);
  if (zero_tail && size > keep) std::memset(static_cast<char*>(q) + keep, 0, size - keep);
  foreign_free(rt, p);
  return q;
}

void* offset_malloc(const Runtime& rt, size_t size, size_t align, size_t offset) {
  void* p = aligned_offset_alloc(size, align, offset);
  if (!p) set_errno(rt, is_pow2(align) && (!offset || offset < size) ? ENOMEM : EINVAL);
  return p;
}

// ---- the replacements, for runtime slot R ----

template <unsigned R>
struct Hooks {
  static Runtime& rt() { return g_runtimes[R]; }

  static void* malloc_(size_t n) {
    void* p = gr_malloc(n);
    if (!p) set_errno(rt(), ENOMEM);
    return p;
  }
  static void* calloc_(size_t count, size_t size) {
    void* p = gr_calloc(count, size);
    if (!p) set_errno(rt(), ENOMEM);
    return p;
  }
  static void free_(void* p) {
    if (!p) return;
    if (gr_owns(p)) return gr_free(p);
    foreign_free(rt(), p);
  }
  static size_t msize_(void* p) {
    if (p && gr_owns(p)) return gr_usable_size(p);
    if (auto f = original<size_t (*)(void*)>(rt(), kMsize)) return f(p);
    if (!p) {
      set_errno(rt(), EINVAL);
      return size_t(-1);
    }
    return foreign_size(rt(), p);
  }
  static void* realloc_(void* p, size_t n) {
    if (!p) return malloc_(n);
    if (gr_owns(p)) {
      void* q = gr_realloc(p, n);
      if (!q && n) set_errno(rt(), ENOMEM);
      return q;
    }
    if (n == 0) {
      foreign_free(rt(), p);
      return nullptr;
    }
    const size_t old = foreign_size(rt(), p);
    if (old == size_t(-1)) {
      if (auto f = original<void* (*)(void*, size_t)>(rt(), kRealloc)) return f(p, n);
      set_errno(rt(), EINVAL);
      return nullptr;
    }
    return migrate(rt(), p, old, n, false);
  }
  // In place only, by definition: a Granule block "expands" within its usable
  // size, a foreign one is the runtime's business.
  static void* expand_(void* p, size_t n) {
    if (p && gr_owns(p)) {
      if (n <= gr_usable_size(p)) return p;
      set_errno(rt(), ENOMEM);
      return nullptr;
    }
    if (auto f = original<void* (*)(void*, size_t)>(rt(), kExpand)) return f(p, n);
    set_errno(rt(), ENOMEM);
    return nullptr;
  }
  static void* recalloc_(void* p, size_t count, size_t size) {
    size_t total;
    if (__builtin_mul_overflow(count, size, &total)) {
      set_errno(rt(), ENOMEM);
      return nullptr;
    }
    if (!p) return calloc_(count, size);
    if (gr_owns(p)) {
      const size_t old = gr_usable_size(p);
      void* q = gr_realloc(p, total);
      if (q && total > old) std::memset(static_cast<char*>(q) + old, 0, total - old);
      if (!q && total) set_errno(rt(), ENOMEM);
      return q;
    }
    if (total == 0) {
      foreign_free(rt(), p);
      return nullptr;
    }
    const size_t old = foreign_size(rt(), p);
    if (old == size_t(-1)) {
      if (auto f = original<void* (*)(void*, size_t, size_t)>(rt(), kRecalloc))
        return f(p, count, size);
      set_errno(rt(), EINVAL);
      return nullptr;
    }
    return migrate(rt(), p, old, total, true);
  }

  static void* aligned_offset_malloc_(size_t size, size_t align, size_t offset) {
    return offset_malloc(rt(), size, align, offset);
  }
  static void* aligned_malloc_(size_t size, size_t align) {
    return offset_malloc(rt(), size, align, 0);
  }
  static void aligned_free_(void* p) {
    if (!p) return;
    if (gr_owns(p)) return aligned_release(p);
    if (auto f = original<void (*)(void*)>(rt(), kAlignedFree)) return f(p);
    if (HANDLE h = crt_heap(rt())) HeapFree(h, 0, aligned_saved_base(p));
  }
  static size_t aligned_msize_(void* p, size_t align, size_t offset) {
    if (p && gr_owns(p)) return our_aligned_size(p);
    if (auto f = original<size_t (*)(void*, size_t, size_t)>(rt(), kAlignedMsize))
      return f(p, align, offset);
    if (!p) {
      set_errno(rt(), EINVAL);
      return size_t(-1);
    }
    if (HANDLE h = crt_heap(rt())) {
      void* base = aligned_saved_base(p);
      const size_t whole = HeapSize(h, 0, base);
      const size_t skip = size_t(static_cast<char*>(p) - static_cast<char*>(base));
      return whole != size_t(-1) && whole > skip ? whole - skip : size_t(-1);
    }
    return size_t(-1);
  }
  // Foreign aligned blocks stay with their runtime (its _aligned_realloc
  // knows their layout); ours move or stay in Granule.
  static void* aligned_offset_realloc_(void* p, size_t size, size_t align, size_t offset) {
    if (p && !gr_owns(p)) {
      if (auto f = original<void* (*)(void*, size_t, size_t, size_t)>(rt(), kAlignedOffsetRealloc))
        return f(p, size, align, offset);
      set_errno(rt(), EINVAL);
      return nullptr;
    }
    void* q = aligned_offset_realloc_ours(p, size, align, offset);
    if (!q && size) set_errno(rt(), ENOMEM);
    return q;
  }
  static void* aligned_realloc_(void* p, size_t size, size_t align) {
    if (p && !gr_owns(p)) {
      if (auto f = original<void* (*)(void*, size_t, size_t)>(rt(), kAlignedRealloc))
        return f(p, size, align);
      set_errno(rt(), EINVAL);
      return nullptr;
    }
    return aligned_offset_realloc_(p, size, align, 0);
  }
  static void* aligned_offset_recalloc_(void* p, size_t count, size_t size, size_t align,
                                        size_t offset) {
    if (p && !gr_owns(p)) {
      if (auto f = original<void* (*)(void*, size_t, size_t, size_t, size_t)>(
              rt(), kAlignedOffsetRecalloc))
        return f(p, count, size, align, offset);
      set_errno(rt(), EINVAL);
      return nullptr;
    }
    void* q = aligned_offset_recalloc_ours(p, count, size, align, offset);
    if (!q && count && size) set_errno(rt(), ENOMEM);
    return q;
  }
  static void* aligned_recalloc_(void* p, size_t count, size_t size, size_t align) {
    if (p && !gr_owns(p)) {
      if (auto f = original<void* (*)(void*, size_t, size_t, size_t)>(rt(), kAlignedRecalloc))
        return f(p, count, size, align);
      set_errno(rt(), EINVAL);
      return nullptr;
    }
    return aligned_offset_recalloc_(p, count, size, align, 0);
  }

  // On failure the runtime's own operator new runs: it calls the new handler
  // and throws std::bad_alloc in the runtime's C++ ABI, which we can't.
  static void* new_(size_t n) {
    if (void* p = gr_malloc(n ? n : 1)) return p;
    if (auto f = original<void* (*)(size_t)>(rt(), kNew)) return f(n);
    return nullptr;
  }
  static void* new_dbg_(size_t n, int type, const char* file, int line) {
    if (void* p = gr_malloc(n ? n : 1)) return p;
    if (auto f = original<void* (*)(size_t, int, const char*, int)>(rt(), kNewDbg))
      return f(n, type, file, line);
    return nullptr;
  }
  static void delete_(void* p) {
    if (!p) return;
    if (gr_owns(p)) return gr_free(p);
    if (auto f = original<void (*)(void*)>(rt(), kDelete)) return f(p);
    foreign_free(rt(), p);
  }
  static void delete_dbg_(void* p, int type, const char* file, int line) {
    if (!p) return;
    if (gr_owns(p)) return gr_free(p);
    if (auto f = original<void (*)(void*, int, const char*, int)>(rt(), kDeleteDbg))
      return f(p, type, file, line);
    foreign_free(rt(), p);
  }

  static void* get(Fn f) {
    switch (f) {
      case kMalloc:
        return reinterpret_cast<void*>(&malloc_);
      case kCalloc:
        return reinterpret_cast<void*>(&calloc_);
      case kRealloc:
        return reinterpret_cast<void*>(&realloc_);
      case kFree:
        return reinterpret_cast<void*>(&free_);
      case kMsize:
        return reinterpret_cast<void*>(&msize_);
      case kExpand:
        return reinterpret_cast<void*>(&expand_);
      case kRecalloc:
        return reinterpret_cast<void*>(&recalloc_);
      case kAlignedMalloc:
        return reinterpret_cast<void*>(&aligned_malloc_);
      case kAlignedRealloc:
        return reinterpret_cast<void*>(&aligned_realloc_);
      case kAlignedRecalloc:
        return reinterpret_cast<void*>(&aligned_recalloc_);
      case kAlignedFree:
        return reinterpret_cast<void*>(&aligned_free_);
      case kAlignedMsize:
        return reinterpret_cast<void*>(&aligned_msize_);
      case kAlignedOffsetMalloc:
        return reinterpret_cast<void*>(&aligned_offset_malloc_);
      case kAlignedOffsetRealloc:
        return reinterpret_cast<void*>(&aligned_offset_realloc_);
      case kAlignedOffsetRecalloc:
        return reinterpret_cast<void*>(&aligned_offset_recalloc_);
      case kNew:
        return reinterpret_cast<void*>(&new_);
      case kNewDbg:
        return reinterpret_cast<void*>(&new_dbg_);
      case kDelete:
        return reinterpret_cast<void*>(&delete_);
      case kDeleteDbg:
        return reinterpret_cast<void*>(&delete_dbg_);
      case kFnCount:
        break;
    }
    return nullptr;
  }
};

template <unsigned... R>
void* hook_in(unsigned r, Fn f, std::integer_sequence<unsigned, R...>) {
  void* result = nullptr;
  ((r == R ? (result = Hooks<R>::get(f), 0) : 0), ...);
  return result;
}

void* hook(unsigned r, Fn f) {
  return hook_in(r, f, std::make_integer_sequence<unsigned, kRuntimeCount>{});
}

// ---- patching ----

#if defined(GRANULE_TEST_NO_TRAMPOLINES)
// A test build (test/windows/fallback/granule.dll): every entry is patched as
// if no trampoline could be built, so the HeapFree/HeapSize paths run.
constexpr bool kForceNoTrampoline = true;
#else
constexpr bool kForceNoTrampoline = false;
#endif

void narrow(const wchar_t* w, char* out, size_t size) {
  size_t i = 0;
  for (; w[i] && i + 1 < size; ++i) out[i] = char(w[i]);
  out[i] = 0;
}

bool already_patched(void* address) {
  for (size_t i = 0; i < g_patched_count; ++i)
    if (g_patched[i] == address) return true;
  return false;
}

bool relocation_problem(PatchStatus s) {
  return s == PatchStatus::kDecodeFailed || s == PatchStatus::kUnsupported ||
         s == PatchStatus::kBranchIntoPatch || s == PatchStatus::kOutOfRange;
}

struct Target {
  const char* name;
  Fn fn;
  void* address;
};

// Caller holds g_lock.
void redirect_runtime(unsigned r, HMODULE module) {
  Runtime& rt = g_runtimes[r];
  if (rt.module) return;
  rt.module = module;
  char runtime[32];
  narrow(kRuntimeNames[r], runtime, sizeof runtime);
  rt.get_heap_handle = GetProcAddress(module, "_get_heap_handle");
  rt.errno_location = GetProcAddress(module, "_errno");

  Target targets[kExportCount];
  size_t count = 0;
  for (const Export& e : kExports) {
    void* entry = reinterpret_cast<void*>(GetProcAddress(module, e.name));
    if (!entry) continue;
    void* code = skip_jumps(entry);
    const Target* twin = nullptr;
    for (size_t i = 0; i < count && !twin; ++i)
      if (targets[i].address == code) twin = &targets[i];
    if (twin) {
      report_verbose("%s!%s: same code as %s", runtime, e.name, twin->name);
      continue;
    }
    if (already_patched(code)) {
      report_verbose("%s!%s: skipped, its code is already redirected (shared with another runtime)",
                     runtime, e.name);
      continue;
    }
    targets[count++] = {e.name, e.fn, code};
  }

  // All or none per family: a member that can't be redirected at all (too
  // short, unreadable) or only without a trampoline where no heap-handle
  // fallback exists, keeps its whole family unpatched.
  bool family_ok[kFamilyCount] = {true, true, true};
  for (size_t i = 0; i < count; ++i) {
    const PatchStatus s = patch_probe(targets[i].address);
    const bool ok = s == PatchStatus::kOk || (relocation_problem(s) && rt.get_heap_handle);
    if (!ok && family_ok[family_of(targets[i].fn)]) {
      family_ok[family_of(targets[i].fn)] = false;
      report_verbose("%s!%s: %s; its family stays unpatched", runtime, targets[i].name,
                     patch_status_text(s));
    }
  }

  size_t patched = 0;
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t i = 0; i < count; ++i) {
      const Target& t = targets[i];
      if (releases_only(t.fn) != (pass == 0) || !family_ok[family_of(t.fn)]) continue;
      void* replacement = hook(r, t.fn);
      // The first trampoline of each function goes straight into the table:
      // patch_function stores it before the jump goes live, so a concurrent
      // call with a foreign block already finds it.
      void* spare = nullptr;
      void** slot = rt.original[t.fn] ? &spare : &rt.original[t.fn];
      PatchStatus s = kForceNoTrampoline ? PatchStatus::kDecodeFailed
                                         : patch_function(t.address, replacement, slot);
      if (s == PatchStatus::kOk) {
        report_verbose("%s!%s: patched", runtime, t.name);
      } else if (relocation_problem(s) && rt.get_heap_handle &&
                 redirect_function(t.address, replacement) == PatchStatus::kOk) {
        report_verbose(
            "%s!%s: patched without a trampoline (%s); foreign blocks go to HeapFree/HeapSize",
            runtime, t.name, patch_status_text(s));
      } else {
        report_verbose("%s!%s: skipped: %s", runtime, t.name, patch_status_text(s));
        continue;
      }
      g_patched[g_patched_count++] = t.address;
      ++patched;
    }
  }
  report_verbose("%s: %llu entry points redirected to Granule", runtime,
                 (unsigned long long)patched);
}

int runtime_index(const wchar_t* name, size_t length) {
  for (unsigned r = 0; r < kRuntimeCount; ++r) {
    const wchar_t* k = kRuntimeNames[r];
    size_t i = 0;
    for (; i < length && k[i]; ++i) {
      wchar_t a = name[i], b = k[i];
      if (a >= L'A' && a <= L'Z') a = wchar_t(a - L'A' + L'a');
      if (a != b) break;
    }
    if (i == length && !k[i]) return int(r);
  }
  return -1;
}

// LdrRegisterDllNotification (ntdll; not in the mingw headers).
struct UnicodeString {
  USHORT length;  // bytes
  USHORT maximum_length;
  PWSTR buffer;
};
struct DllNotificationData {
  ULONG flags;
  const UnicodeString* full_name;
  const UnicodeString* base_name;
  PVOID base;
  ULONG size;
};
constexpr ULONG kDllLoaded = 1;
using DllNotificationFn = VOID(NTAPI*)(ULONG reason, const DllNotificationData* data,
                                       PVOID context);
using RegisterFn = LONG(NTAPI*)(ULONG flags, DllNotificationFn fn, PVOID context, PVOID* cookie);

// Runs under the loader lock, before the new DLL's own initialisation: its
// code can be patched, but it must not be called yet (hence the lazy
// _get_heap_handle).
VOID NTAPI on_dll_notification(ULONG reason, const DllNotificationData* data, PVOID) {
  if (reason != kDllLoaded || !data || !data->base_name || !data->base_name->buffer) return;
  const int r = runtime_index(data->base_name->buffer, data->base_name->length / sizeof(wchar_t));
  if (r < 0) return;
  AcquireSRWLockExclusive(&g_lock);
  redirect_runtime(unsigned(r), static_cast<HMODULE>(data->base));
  ReleaseSRWLockExclusive(&g_lock);
}

}  // namespace

void crt_redirect_start() {
  AcquireSRWLockExclusive(&g_lock);
  for (unsigned r = 0; r < kRuntimeCount; ++r) {
    if (HMODULE m = GetModuleHandleW(kRuntimeNames[r])) redirect_runtime(r, m);
  }
  ReleaseSRWLockExclusive(&g_lock);

  static PVOID cookie = nullptr;
  HMODULE ntdll = GetModuleHandleW(L"ntdll.dll");
  auto reg = ntdll ? reinterpret_cast<RegisterFn>(reinterpret_cast<void*>(
                         GetProcAddress(ntdll, "LdrRegisterDllNotification")))
                   : nullptr;
  if (!reg || reg(0, on_dll_notification, nullptr, &cookie) != 0)
    report_verbose("runtimes loaded later will not be redirected: no LdrRegisterDllNotification");
}

}  // namespace granule::win
