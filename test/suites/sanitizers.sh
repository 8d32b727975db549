#!/usr/bin/env bash
# The stress program built with ThreadSanitizer (clang, core sources
# instrumented too) must finish without a report; the unit tests built with
# UndefinedBehaviorSanitizer (no recovery) must pass.
set -u
. "$(dirname "$0")/../../scripts/lib/common.sh"
cd "$GRANULE_ROOT"
out=build/sanitize
mkdir -p "$out"
passed=0
failed=0
core=(src/*.cpp src/os/*_linux.cpp)
log=$(mktemp)
trap 'rm -f "$log"' EXIT

result() {  # name status
  if [ "$2" -eq 0 ]; then
    echo "ok   $1"
    passed=$((passed + 1))
  else
    echo "FAIL $1"
    tail -n 40 "$log"
    failed=$((failed + 1))
  fi
}

# Build only when a source is newer than the binary.
stale() { [ ! -x "$1" ] || [ -n "$(find src include test "${@:2}" -newer "$1" -name '*.[ch]*' | head -n1)" ]; }

if stale "$out/stress-tsan"; then
  clang++ -std=c++20 -O1 -g -fsanitize=thread -Iinclude -Isrc -pthread "${core[@]}" \
    test/stress/stress.cpp -o "$out/stress-tsan" >"$log" 2>&1 || { result "build stress-tsan" 1; }
fi
if [ -x "$out/stress-tsan" ]; then
  # halt_on_error: any report fails the run (exit status 66).
  TSAN_OPTIONS="halt_on_error=1 exitcode=66" "$out/stress-tsan" 4 4 3000 >"$log" 2>&1
  status=$?
  grep -q "WARNING: ThreadSanitizer" "$log" && status=1
  cat "$log" | tail -n 2
  result "stress under ThreadSanitizer, no report" "$status"
fi

if stale "$out/unit-ubsan"; then
  g++ -std=c++20 -O1 -g -fsanitize=undefined -fno-sanitize-recover=all -Iinclude -Isrc -Itest \
    -pthread "${core[@]}" test/catch_main.cpp test/unit/*.cpp -o "$out/unit-ubsan" >"$log" 2>&1 ||
    { result "build unit-ubsan" 1; }
fi
if [ -x "$out/unit-ubsan" ]; then
  UBSAN_OPTIONS="print_stacktrace=1" "$out/unit-ubsan" >"$log" 2>&1
  status=$?
  grep -q "runtime error" "$log" && status=1
  tail -n 2 "$log"
  result "unit tests under UndefinedBehaviorSanitizer" "$status"
fi

echo "sanitizers: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
