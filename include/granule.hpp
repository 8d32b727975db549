// Granule's C++ surface: standard allocators over the gr_* API and an owning
// handle for first-class heaps. Header-only; it compiles in the program, so
// its failures throw as the standard library's would (std::bad_alloc,
// std::bad_array_new_length), or abort when exceptions are off.
//
//   std::vector<int, gr::allocator<int>> v;          // Granule, any thread
//   gr::heap arena;                                  // HeapCreate
//   std::vector<int, gr::heap_allocator<int>> w(arena.allocator<int>());
//   ...                                              // arena's destructor is HeapDestroy
#ifndef GRANULE_HPP
#define GRANULE_HPP

#include <cstddef>
#include <cstdlib>
#include <limits>
#include <new>
#include <type_traits>
#include <utility>

#include "granule.h"

namespace gr {

namespace detail {

// Throws E (std::bad_alloc, std::bad_array_new_length) where the program
// has exceptions, aborts where it has none.
template <class E>
[[noreturn]] void fail() {
#if defined(__cpp_exceptions) || defined(_CPPUNWIND)
  throw E();
#else
  std::abort();
#endif
}

// Every Granule block is aligned as malloc's are; only types that ask for
// more take the aligned entry points (and their sized free).
template <class T>
inline constexpr bool kOverAligned = alignof(T) > alignof(std::max_align_t);

// n objects of T from heap (nullptr: the calling thread's heap).
template <class T>
T* allocate(gr_heap_t* heap, std::size_t n) {
  if (n > std::numeric_limits<std::size_t>::max() / sizeof(T)) fail<std::bad_array_new_length>();
  const std::size_t bytes = n * sizeof(T);
  void* p;
  if constexpr (kOverAligned<T>)
    p = heap ? gr_heap_aligned_alloc(heap, alignof(T), bytes) : gr_aligned_alloc(alignof(T), bytes);
  else
    p = heap ? gr_heap_malloc(heap, bytes) : gr_malloc(bytes);
  if (!p) fail<std::bad_alloc>();
  return static_cast<T*>(p);
}

// Any block, whichever heap it came from, goes back through gr_free.
template <class T>
void deallocate(T* p, std::size_t n) noexcept {
  if constexpr (kOverAligned<T>)
    gr_free_aligned_sized(p, alignof(T), n * sizeof(T));
  else
    gr_free_sized(p, n * sizeof(T));
}

// What both allocators share: the types std::allocator_traits reads, and
// the free (gr_free serves blocks of every heap, from any thread).
template <class T>
struct AllocatorBase {
  using value_type = T;
  using size_type = std::size_t;
  using difference_type = std::ptrdiff_t;

  void deallocate(T* p, std::size_t n) noexcept { detail::deallocate(p, n); }
  std::size_t max_size() const noexcept {
    return std::numeric_limits<std::size_t>::max() / sizeof(T);
  }
};

}  // namespace detail

// Stateless: every instance allocates from the calling thread's heap, and
// any instance frees what any other allocated (from any thread).
template <class T>
class allocator : public detail::AllocatorBase<T> {
 public:
  using propagate_on_container_move_assignment = std::true_type;
  using is_always_equal = std::true_type;

  constexpr allocator() noexcept = default;
  template <class U>
  constexpr allocator(const allocator<U>&) noexcept {}

  [[nodiscard]] T* allocate(std::size_t n) { return detail::allocate<T>(nullptr, n); }
};

template <class T, class U>
constexpr bool operator==(const allocator<T>&, const allocator<U>&) noexcept {
  return true;
}

// Allocates from one first-class heap (a default-constructed one from the
// calling thread's heap). Containers carry it along on copy, move and swap,
// so their nodes stay in that heap; two compare equal when they share it.
// The heap must outlive the containers, or be reset/destroyed with them
// abandoned (never used again): that is how a whole arena goes at once.
template <class T>
class heap_allocator : public detail::AllocatorBase<T> {
 public:
  using propagate_on_container_copy_assignment = std::true_type;
  using propagate_on_container_move_assignment = std::true_type;
  using propagate_on_container_swap = std::true_type;
  using is_always_equal = std::false_type;

  constexpr heap_allocator() noexcept = default;
  constexpr explicit heap_allocator(gr_heap_t* heap) noexcept : heap_(heap) {}
  template <class U>
  constexpr heap_allocator(const heap_allocator<U>& other) noexcept : heap_(other.heap()) {}

  [[nodiscard]] T* allocate(std::size_t n) { return detail::allocate<T>(heap_, n); }
  constexpr gr_heap_t* heap() const noexcept { return heap_; }

 private:
  gr_heap_t* heap_ = nullptr;
};

template <class T, class U>
constexpr bool operator==(const heap_allocator<T>& a, const heap_allocator<U>& b) noexcept {
  return a.heap() == b.heap();
}

// Owns a first-class heap: created by the constructor, destroyed with every
// block in it by the destructor. Movable, not copyable.
class heap {
 public:
  // max_size 0: unbounded; past it allocation fails (bad_alloc from the
  // allocators, NULL from malloc). initial_reserve: bytes reserved now.
  explicit heap(std::size_t max_size = 0, std::size_t initial_reserve = 0) {
    gr_heap_options_t options = {initial_reserve, max_size};
    heap_ = gr_heap_create(&options);
    if (!heap_) detail::fail<std::bad_alloc>();
  }
  ~heap() {
    if (heap_) gr_heap_destroy(heap_);
  }
  heap(heap&& other) noexcept : heap_(std::exchange(other.heap_, nullptr)) {}
  heap& operator=(heap&& other) noexcept {
    if (this != &other) {
      if (heap_) gr_heap_destroy(heap_);
      heap_ = std::exchange(other.heap_, nullptr);
    }
    return *this;
  }
  heap(const heap&) = delete;
  heap& operator=(const heap&) = delete;

  gr_heap_t* get() const noexcept { return heap_; }
  // Frees every block, keeps the reservation.
  void reset() noexcept { gr_heap_reset(heap_); }

  // The C entry points: NULL with errno on failure, blocks freed with gr_free.
  void* malloc(std::size_t size) noexcept { return gr_heap_malloc(heap_, size); }
  void* calloc(std::size_t count, std::size_t size) noexcept {
    return gr_heap_calloc(heap_, count, size);
  }
  void* realloc(void* p, std::size_t size) noexcept { return gr_heap_realloc(heap_, p, size); }
  void* aligned_alloc(std::size_t alignment, std::size_t size) noexcept {
    return gr_heap_aligned_alloc(heap_, alignment, size);
  }
  bool owns(const void* p) const noexcept { return heap_ && gr_heap_of(p) == heap_; }

  template <class T>
  heap_allocator<T> allocator() const noexcept {
    return heap_allocator<T>(heap_);
  }

 private:
  gr_heap_t* heap_ = nullptr;
};

}  // namespace gr

#endif  // GRANULE_HPP
