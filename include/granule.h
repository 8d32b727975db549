/* Granule: a general-purpose memory allocator.
 *
 * The C API. Every function is safe to call from any thread. Blocks returned
 * by any gr_* allocation function (including gr_heap_*) are released with
 * gr_free, from any thread. */
#ifndef GRANULE_H
#define GRANULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#if defined(GRANULE_BUILDING_DLL)
#define GRANULE_API __declspec(dllexport)
#else
#define GRANULE_API
#endif
#else
#define GRANULE_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define GRANULE_VERSION_MAJOR 0
#define GRANULE_VERSION_MINOR 1
#define GRANULE_VERSION_PATCH 0

/* ---- Allocation (same contracts as the C functions they mirror) ---- */
GRANULE_API void* gr_malloc(size_t size);
GRANULE_API void* gr_calloc(size_t count, size_t size);
GRANULE_API void* gr_realloc(void* p, size_t size);
/* realloc(p, count*size) with overflow check (ENOMEM on overflow). */
GRANULE_API void* gr_reallocarray(void* p, size_t count, size_t size);
GRANULE_API void gr_free(void* p);
/* size must be the size asked for (or anything up to gr_usable_size). */
GRANULE_API void gr_free_sized(void* p, size_t size);
GRANULE_API void gr_free_aligned_sized(void* p, size_t alignment, size_t size);
/* Bytes usable at p (>= the size asked for); 0 for NULL or a pointer that is
 * not a live Granule block. */
GRANULE_API size_t gr_usable_size(const void* p);
/* alignment: any power of two. Returns NULL with errno EINVAL otherwise. */
GRANULE_API void* gr_aligned_alloc(size_t alignment, size_t size);
/* Returns 0, EINVAL (alignment not a power of two multiple of sizeof(void*))
 * or ENOMEM; *out is untouched on error. */
GRANULE_API int gr_posix_memalign(void** out, size_t alignment, size_t size);
GRANULE_API void* gr_aligned_realloc(void* p, size_t alignment, size_t size);
/* True when p lies in memory Granule manages. O(1), lock-free, never faults,
 * whatever the pointer value. */
GRANULE_API bool gr_owns(const void* p);
/* (major << 16) | (minor << 8) | patch */
GRANULE_API int gr_version(void);

/* ---- Memory return ---- */
/* Return free memory to the OS. force=false: what is past the purge delay;
 * force=true: everything free now, in every heap (including blocks freed by
 * other threads and held for an idle owner where that can be done safely). */
GRANULE_API void gr_collect(bool force);

/* ---- Options (environment GRANULE_<NAME>, or set at run time) ---- */
typedef enum gr_option {
  GR_OPTION_VERBOSE = 0,         /* 0/1: print diagnostics on stderr */
  GR_OPTION_SHOW_STATS,          /* 0/1: print statistics at exit */
  GR_OPTION_SHOW_ERRORS,         /* 0/1: report invalid frees on stderr */
  GR_OPTION_PURGE_DELAY,         /* ms before free memory is decommitted; 0 = at once, -1 = never */
  GR_OPTION_PURGE_THREAD,        /* 0/1: a background thread purges while the program is idle */
  GR_OPTION_LARGE_PAGES,         /* 0/1: allow transparent huge pages for large mappings */
  GR_OPTION_HUGE_CACHE,          /* MiB of freed huge blocks kept for reuse */
  GR_OPTION_DISABLE_REDIRECT,    /* Windows: 1 = do not patch the C runtime */
  GR_OPTION_COUNT_
} gr_option_t;

GRANULE_API long gr_option_get(gr_option_t option);
/* Returns false (and changes nothing) for an unknown option or a value out of
 * range. */
GRANULE_API bool gr_option_set(gr_option_t option, long value);
/* Name without the GRANULE_ prefix ("PURGE_DELAY"), NULL if out of range. */
GRANULE_API const char* gr_option_name(gr_option_t option);

/* ---- Statistics ---- */
#define GR_STATS_CLASSES 96
typedef struct gr_stats {
  size_t reserved;            /* address space held from the OS */
  size_t committed;           /* of which committed */
  size_t in_use;              /* bytes in live blocks (usable sizes) */
  size_t peak_reserved;
  size_t peak_committed;
  size_t peak_in_use;         /* highest in_use seen by a gr_stats_get call (read on demand) */
  size_t segments;            /* live segments */
  size_t huge_blocks;         /* live blocks with their own mapping */
  size_t heaps;               /* live heaps (threads and first-class) */
  uint64_t allocations;       /* blocks handed out (counted in batches; an upper bound) */
  uint64_t purges;            /* decommit operations */
  uint64_t os_reserves, os_releases, os_commits, os_decommits;
  size_t class_count;                     /* entries used below */
  size_t class_size[GR_STATS_CLASSES];    /* block size of each class */
  size_t class_live[GR_STATS_CLASSES];    /* live blocks of each class */
} gr_stats_t;

GRANULE_API void gr_stats_get(gr_stats_t* out);
/* Human-readable summary to stderr. */
GRANULE_API void gr_stats_print(void);
/* The same as a JSON object into buf (always NUL-terminated when size > 0);
 * returns the length it needs, like snprintf. */
GRANULE_API size_t gr_stats_json(char* buf, size_t size);

/* ---- First-class heaps (the HeapCreate/HeapAlloc/HeapDestroy model) ---- */
typedef struct gr_heap gr_heap_t;
typedef struct gr_heap_options {
  size_t initial_reserve; /* bytes reserved up front (0: none) */
  size_t max_size;        /* 0: unbounded; otherwise allocation beyond it returns NULL (ENOMEM) */
} gr_heap_options_t;

/* options may be NULL. Thread-safe: any thread may allocate from the heap. */
GRANULE_API gr_heap_t* gr_heap_create(const gr_heap_options_t* options);
/* Frees every block of the heap and returns all its memory. */
GRANULE_API void gr_heap_destroy(gr_heap_t* heap);
/* Frees every block of the heap, keeps its reservation for reuse. */
GRANULE_API void gr_heap_reset(gr_heap_t* heap);
GRANULE_API void* gr_heap_malloc(gr_heap_t* heap, size_t size);
GRANULE_API void* gr_heap_calloc(gr_heap_t* heap, size_t count, size_t size);
GRANULE_API void* gr_heap_realloc(gr_heap_t* heap, void* p, size_t size);
GRANULE_API void* gr_heap_aligned_alloc(gr_heap_t* heap, size_t alignment, size_t size);
/* The heap a live block belongs to, NULL for thread-heap or foreign blocks. */
GRANULE_API gr_heap_t* gr_heap_of(const void* p);

#ifdef __cplusplus
}
#endif

#endif /* GRANULE_H */
