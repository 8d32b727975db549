// Workload 1: many small short-lived objects in one thread, the pattern of
// symbolic and number-crunching code: build a small expression tree, evaluate
// it, throw it away.
#include <vector>

#include "bench_common.h"

namespace {

struct Node {
  Node* left;
  Node* right;
  long value;
  size_t extra;  // size of the payload block below
  char* payload;
};

Node* build(bench::Rng& rng, int depth) {
  Node* n = new Node;
  n->value = static_cast<long>(rng.next() % 100);
  n->extra = rng.range(8, 120);
  n->payload = static_cast<char*>(bench::xmalloc(n->extra));
  if (depth > 0) {
    n->left = build(rng, depth - 1);
    n->right = build(rng, depth - 1);
  } else {
    n->left = n->right = nullptr;
  }
  return n;
}

long destroy(Node* n) {
  if (n == nullptr) return 0;
  long sum = n->value + destroy(n->left) + destroy(n->right);
  bench::xfree(n->payload, n->extra);
  delete n;
  return sum;
}

}  // namespace

int main(int argc, char** argv) {
  bench::Args args(argc, argv);
  long iters = args.get("iters", 20000);
  int depth = static_cast<int>(args.get("depth", 8));
  args.done();

  bench::Rng rng(1);
  long total = 0;
  for (long i = 0; i < iters; ++i) total += destroy(build(rng, depth));
  std::printf("small_objects: %ld trees, checksum %ld\n", iters, total);
  return 0;
}
