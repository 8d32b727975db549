// The C++ surface (include/granule.hpp): standard allocators and gr::heap.
// This binary does not replace malloc, so a block that gr_owns comes from
// Granule through the allocator under test and not from std::allocator.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <list>
#include <map>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "granule.hpp"

namespace {

struct alignas(128) Wide {
  unsigned char bytes[200];
};

size_t live_heaps() {
  gr_stats_t st;
  gr_stats_get(&st);
  return st.heaps;
}

using Key = std::pair<const int, std::string>;

}  // namespace

TEST_CASE("gr::allocator: containers allocate from Granule and keep their contents") {
  std::vector<int, gr::allocator<int>> v;
  for (int i = 0; i < 100000; ++i) v.push_back(i * 3);
  REQUIRE(gr_owns(v.data()));
  CHECK(gr_heap_of(v.data()) == nullptr);  // the thread's heap, not a first-class one
  CHECK(gr_usable_size(v.data()) >= v.capacity() * sizeof(int));
  for (int i = 0; i < 100000; ++i) REQUIRE(v[size_t(i)] == i * 3);

  // Rebound to the node types of node-based containers.
  std::map<int, std::string, std::less<>, gr::allocator<Key>> m;
  std::list<std::string, gr::allocator<std::string>> l;
  for (int i = 0; i < 2000; ++i) {
    m.emplace(i, std::string(size_t(i % 50), 'a'));
    l.emplace_back(size_t(i % 70), 'b');
  }
  for (auto& kv : m) {
    REQUIRE(gr_owns(&kv));
    REQUIRE(kv.second.size() == size_t(kv.first % 50));
  }
  for (auto& s : l) REQUIRE(gr_owns(&s));

  // Stateless: any instance frees what another allocated.
  gr::allocator<double> a;
  gr::allocator<char> b(a);
  CHECK(a == b);
  double* d = a.allocate(10);
  gr::allocator<double>(b).deallocate(d, 10);
}

TEST_CASE("gr::allocator: over-aligned types and failures") {
  std::vector<Wide, gr::allocator<Wide>> v(37);
  for (auto& w : v) REQUIRE(uintptr_t(&w) % alignof(Wide) == 0);
  REQUIRE(gr_owns(v.data()));
  gr::allocator<Wide> a;
  for (size_t n : {size_t(1), size_t(3), size_t(1000)}) {
    Wide* p = a.allocate(n);
    REQUIRE(uintptr_t(p) % alignof(Wide) == 0);
    std::memset(p, 0x5a, n * sizeof(Wide));
    a.deallocate(p, n);
  }

  gr::allocator<uint64_t> big;
  CHECK_THROWS_AS(big.allocate(big.max_size() + 1), std::bad_array_new_length);
  CHECK_THROWS_AS(big.allocate(big.max_size() / 2), std::bad_alloc);
  uint64_t* p = big.allocate(8);  // still works after a failure
  p[7] = 7;
  big.deallocate(p, 8);
}

TEST_CASE("gr::allocator: blocks freed on another thread") {
  auto v = std::vector<std::string, gr::allocator<std::string>>(5000, std::string(40, 'x'));
  std::thread t([moved = std::move(v)]() mutable {
    for (auto& s : moved) REQUIRE(s == std::string(40, 'x'));
    moved.clear();
    moved.shrink_to_fit();
  });
  t.join();
}

TEST_CASE("gr::heap_allocator: containers live in their heap") {
  gr::heap arena;
  std::vector<int, gr::heap_allocator<int>> v(arena.allocator<int>());
  for (int i = 0; i < 50000; ++i) v.push_back(i);
  REQUIRE(gr_heap_of(v.data()) == arena.get());
  REQUIRE(arena.owns(v.data()));

  std::map<int, std::string, std::less<>, gr::heap_allocator<Key>> m(arena.allocator<Key>());
  for (int i = 0; i < 3000; ++i) m.emplace(i, std::to_string(i));
  for (auto& kv : m) {
    REQUIRE(gr_heap_of(&kv) == arena.get());
    REQUIRE(kv.second == std::to_string(kv.first));
  }

  // Equality is "same heap"; rebinding keeps the heap.
  gr::heap other;
  gr::heap_allocator<int> mine = arena.allocator<int>();
  gr::heap_allocator<Key> rebound(mine);
  CHECK(rebound.heap() == arena.get());
  CHECK(mine == rebound);
  CHECK_FALSE(mine == other.allocator<int>());
  CHECK(gr::heap_allocator<int>() == gr::heap_allocator<char>());

  // Copy assignment carries the source's heap along.
  std::vector<int, gr::heap_allocator<int>> w(other.allocator<int>());
  w.assign(100, 9);
  REQUIRE(gr_heap_of(w.data()) == other.get());
  w = v;
  REQUIRE(gr_heap_of(w.data()) == arena.get());
  REQUIRE(w.size() == v.size());

  // Default-constructed: the thread's heap.
  std::vector<int, gr::heap_allocator<int>> plain(1000, 1);
  REQUIRE(gr_owns(plain.data()));
  CHECK(gr_heap_of(plain.data()) == nullptr);

  Wide* wide = arena.allocator<Wide>().allocate(5);
  REQUIRE(uintptr_t(wide) % alignof(Wide) == 0);
  REQUIRE(gr_heap_of(wide) == arena.get());
  arena.allocator<Wide>().deallocate(wide, 5);
}

TEST_CASE("gr::heap: limits, reset, destruction and moves") {
  size_t before = live_heaps();
  {
    gr::heap limited(1 << 20);  // at most 1 MiB
    REQUIRE(live_heaps() == before + 1);
    std::vector<char, gr::heap_allocator<char>> v(limited.allocator<char>());
    CHECK_THROWS_AS(v.reserve(4 << 20), std::bad_alloc);
    v.assign(1000, 'q');  // the heap still serves what fits
    REQUIRE(limited.owns(v.data()));

    void* p = limited.malloc(100);
    REQUIRE(limited.owns(p));
    p = limited.realloc(p, 5000);
    REQUIRE(limited.owns(p));
    void* z = limited.calloc(10, 10);
    REQUIRE(z != nullptr);
    for (int i = 0; i < 100; ++i) REQUIRE(static_cast<unsigned char*>(z)[i] == 0);
    void* al = limited.aligned_alloc(4096, 10);
    REQUIRE(uintptr_t(al) % 4096 == 0);
    gr_free(p);
    gr_free(z);
    gr_free(al);
    v.clear();
    v.shrink_to_fit();

    // reset frees every block at once and the heap serves again.
    for (int i = 0; i < 500; ++i) REQUIRE(limited.malloc(1000) != nullptr);
    limited.reset();
    for (int i = 0; i < 500; ++i) REQUIRE(limited.malloc(1000) != nullptr);
  }
  REQUIRE(live_heaps() == before);  // the destructor destroyed it, blocks and all

  gr::heap a;
  void* p = a.malloc(64);
  gr_heap_t* raw = a.get();
  gr::heap b(std::move(a));
  CHECK(a.get() == nullptr);
  CHECK_FALSE(a.owns(p));
  CHECK(b.get() == raw);
  CHECK(b.owns(p));
  gr::heap c;
  REQUIRE(live_heaps() == before + 2);
  c = std::move(b);  // c's own heap is destroyed, b's moves in
  REQUIRE(live_heaps() == before + 1);
  CHECK(c.owns(p));
  CHECK(a.malloc(10) == nullptr);  // a moved-from handle allocates nothing
}
