#!/usr/bin/env bash
# The benchmark instrument must not rot: one tiny repetition of every
# workload, system and granule only; a crash or wrong data fails it.
set -u
cd "$(dirname "$0")/../.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
if scripts/bench --smoke --out "$out" >"$out/log" 2>&1; then
  rows=$(grep -c '^| ' "$out/results.md" 2>/dev/null || echo 0)
  tail -n 5 "$out/log"
  echo "bench-smoke: 1 passed, 0 failed ($rows table rows)"
else
  cat "$out/log" | tail -n 40
  echo "bench-smoke: 0 passed, 1 failed"
  exit 1
fi
