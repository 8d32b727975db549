#!/usr/bin/env bash
# Out of address space (RLIMIT_AS) through libgranule.so and
# libgranule-secure.so (test/hardening/oom.cpp): null + ENOMEM from every
# entry point, std::bad_alloc from new, and a working allocator afterwards.
# (The OS-refusal hook and the leak checks are in test/unit/test_faults.cpp.)
set -u
. "$(dirname "$0")/../../scripts/lib/common.sh"
cd "$GRANULE_ROOT"
passed=0
failed=0
for lib in libgranule.so libgranule-secure.so; do
  out=$(LD_PRELOAD=$PWD/build/test/$lib timeout -s KILL 120 build/test/test/hardening/oom 2>&1)
  status=$?
  if [ "$status" -eq 0 ] && echo "$out" | grep -q "OOM OK"; then
    echo "ok   RLIMIT_AS with $lib"
    passed=$((passed + 1))
  else
    echo "FAIL RLIMIT_AS with $lib (status $status)"
    echo "$out" | head -n 20
    failed=$((failed + 1))
  fi
done
echo "oom: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
