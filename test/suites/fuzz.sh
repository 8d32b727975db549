#!/usr/bin/env bash
# Fuzz smoke: scripts/fuzz for 60 seconds (GRANULE_FUZZ_SECONDS to change)
# must end without a failure.
set -u
. "$(dirname "$0")/../../scripts/lib/common.sh"
cd "$GRANULE_ROOT"
seconds=${GRANULE_FUZZ_SECONDS:-60}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
scripts/fuzz "$seconds" >"$log" 2>&1
status=$?
grep -E '^stat::|DONE|fuzz_api:|ERROR|SUMMARY' "$log" | tail -n 12
if [ "$status" -eq 0 ] && grep -q DONE "$log"; then
  echo "ok   fuzz $seconds s: $(sed -n 's/^stat::number_of_executed_units: *//p' "$log") executions, $(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")/s"
  echo "fuzz: 1 passed, 0 failed"
else
  tail -n 40 "$log"
  echo "FAIL fuzz (status $status)"
  echo "fuzz: 0 passed, 1 failed"
  exit 1
fi
