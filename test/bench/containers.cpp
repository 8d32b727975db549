// Workload 11: C++ containers through operator new/delete: std::map,
// std::unordered_map and std::string, each rebuilt and checked every round.
#include <map>
#include <string>
#include <unordered_map>

#include "bench_common.h"

namespace {

std::string make_value(uint64_t k) {
  // Lengths straddle the small-string buffer so both paths are used.
  std::string s = "value-" + std::to_string(k);
  s.append(k % 40, static_cast<char>('a' + k % 26));
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  bench::Args args(argc, argv);
  long keys = args.get("keys", 100000);
  long rounds = args.get("rounds", 5);
  args.done();

  bench::Rng rng(17);
  for (long r = 0; r < rounds; ++r) {
    std::map<uint64_t, std::string> ordered;
    std::unordered_map<std::string, uint64_t> hashed;
    for (long i = 0; i < keys; ++i) {
      uint64_t k = rng.next() % (keys * 4);
      ordered[k] = make_value(k);
      hashed[make_value(k)] = k;
    }
    // Erase half so the containers free nodes in a scattered order.
    for (auto it = ordered.begin(); it != ordered.end();) {
      if (it->first % 2 == 0) {
        hashed.erase(it->second);
        it = ordered.erase(it);
      } else {
        ++it;
      }
    }
    for (auto& [k, v] : ordered) {
      if (v != make_value(k)) bench::fail("map value corrupted", v.data(), v.size());
      auto it = hashed.find(v);
      if (it == hashed.end() || it->second != k)
        bench::fail("hash entry corrupted", v.data(), v.size());
    }
    if (ordered.size() != hashed.size()) bench::fail("container sizes differ", nullptr, 0);
    std::string text;
    for (auto& [k, v] : ordered) text += v;
    if (text.size() < ordered.size()) bench::fail("string concatenation lost data", nullptr, 0);
  }
  std::printf("containers: %ld rounds of %ld keys\n", rounds, keys);
  return 0;
}
