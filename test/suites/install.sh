#!/usr/bin/env bash
# Link-time use: `meson install` into a temporary root installs the library,
# the header and granule.pc; a program built with `pkg-config --cflags --libs
# granule` runs on Granule for all its allocations without LD_PRELOAD.
set -u
. "$(dirname "$0")/../../scripts/lib/common.sh"
cd "$GRANULE_ROOT"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0
pass() { echo "ok   $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; failed=$((failed + 1)); }

granule_build build/release --buildtype=release -Dtests=false || { echo "install: 0 passed, 1 failed"; exit 1; }
dest="$work/root"
if meson install -C build/release --destdir "$dest" --no-rebuild >"$work/install.log" 2>&1; then
  pass "meson install --destdir"
else
  cat "$work/install.log"
  fail "meson install --destdir"
fi

lib=$(find "$dest" -name 'libgranule.so' -type f | head -n1)
header=$(find "$dest" -path '*/include/granule.h' | head -n1)
pc=$(find "$dest" -name 'granule.pc' | head -n1)
[ -n "$lib" ] && pass "installed library ${lib#"$dest"}" || fail "no libgranule.so installed"
[ -n "$header" ] && cmp -s "$header" include/granule.h && pass "installed header ${header#"$dest"}" ||
  fail "granule.h not installed (or differs)"
[ -n "$pc" ] && pass "installed ${pc#"$dest"}" || fail "no granule.pc installed"

# The .pc file names the final prefix; the sysroot variable maps it into the
# temporary root, as for any staged install.
export PKG_CONFIG_PATH=$(dirname "${pc:-/nonexistent/x}")
export PKG_CONFIG_SYSROOT_DIR=$dest
flags=$(pkg-config --cflags --libs granule 2>"$work/pc.err")
if [ -n "$flags" ] && echo "$flags" | grep -q -- '-lgranule'; then
  pass "pkg-config --cflags --libs granule: $flags"
else
  cat "$work/pc.err"
  fail "pkg-config --libs granule"
fi

cat >"$work/linked.cpp" <<'CPP'
// Linked with -lgranule, not preloaded: every allocation path, from static
// initialisation to threads and libc's own, must land in Granule.
#include <granule.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>
#include <memory>
#include <string>
#include <thread>
#include <vector>

static std::string* g_static = new std::string(100, 's');  // before main

int main() {
  int bad = 0;
  auto check = [&](const char* what, const void* p) {
    if (!gr_owns(p)) { printf("not from granule: %s\n", what); ++bad; }
  };
  if (getenv("LD_PRELOAD")) { printf("LD_PRELOAD is set\n"); return 1; }
  void* m = malloc(10); check("malloc", m); free(m);
  void* c = calloc(10, 10); check("calloc", c);
  c = realloc(c, 100000); check("realloc", c); free(c);
  void* a = aligned_alloc(4096, 4096); check("aligned_alloc", a); free(a);
  void* pm = nullptr;
  if (posix_memalign(&pm, 64, 100) == 0) check("posix_memalign", pm);
  free(pm);
  void* ma = memalign(128, 50); check("memalign", ma); free(ma);
  char* s = strdup("x"); check("strdup", s); free(s);
  check("static initialiser", g_static->data());
  auto u = std::make_unique<std::vector<int>>(1000); check("new", u.get()); check("vector", u->data());
  std::thread t([&] { std::string big(5000, 't'); check("thread", big.data()); });
  t.join();
  FILE* f = fopen("/proc/self/maps", "r");
  char line[512]; bool mapped = false;
  while (fgets(line, sizeof line, f)) mapped |= strstr(line, "libgranule.so") != nullptr;
  fclose(f);
  if (!mapped) { printf("libgranule.so not mapped\n"); ++bad; }
  printf("%s\n", bad ? "FAILED" : "linked program on granule");
  return bad ? 1 : 0;
}
CPP
libdir=$(dirname "${lib:-/nonexistent/x}")
# shellcheck disable=SC2086
if g++ -std=c++20 -O1 -o "$work/linked" "$work/linked.cpp" $flags -pthread 2>"$work/cc.err"; then
  pass "compile and link with pkg-config flags"
else
  cat "$work/cc.err"
  fail "compile and link with pkg-config flags"
fi
if ldd_out=$(LD_LIBRARY_PATH=$libdir ldd "$work/linked" 2>&1) && echo "$ldd_out" | grep -q "libgranule.so => $libdir"; then
  pass "the program needs the installed libgranule.so"
else
  echo "$ldd_out"
  fail "the program does not load the installed libgranule.so"
fi
if out=$(env -u LD_PRELOAD LD_LIBRARY_PATH="$libdir" "$work/linked" 2>&1) && [ "$out" = "linked program on granule" ]; then
  pass "linked program allocates from granule without LD_PRELOAD"
else
  echo "$out"
  fail "linked program allocates from granule without LD_PRELOAD"
fi

echo "install: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
