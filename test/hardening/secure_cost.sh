#!/usr/bin/env bash
# The hardened build's cost: runs secure_bench under libgranule.so and
# libgranule-secure.so (release builds) in alternation, ROUNDS times (default
# 3), keeps each workload's best time, prints the ratios and their geometric
# mean. Not part of scripts/test (it measures, it asserts nothing).
set -u
. "$(dirname "$0")/../../scripts/lib/common.sh"
cd "$GRANULE_ROOT"
rounds=${1:-3}
granule_build build/release --buildtype=release -Dtests=false || exit 1
granule_build build/test --buildtype=debugoptimized || exit 1
bench=build/test/test/hardening/secure_bench
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for ((i = 0; i < rounds; i++)); do
  LD_PRELOAD=$PWD/build/release/libgranule.so "$bench" >>"$tmp/default"
  LD_PRELOAD=$PWD/build/release/libgranule-secure.so "$bench" >>"$tmp/secure"
done
awk '
  FNR == NR { if (!($1 in d) || $2 < d[$1]) d[$1] = $2; next }
  { if (!($1 in s) || $2 < s[$1]) s[$1] = $2 }
  END {
    n = 0; logsum = 0
    printf "%-20s %10s %10s %8s\n", "workload", "default s", "secure s", "ratio"
    for (k in d) {
      r = s[k] / d[k]; logsum += log(r); n++
      printf "%-20s %10.4f %10.4f %8.3f\n", k, d[k], s[k], r
    }
    printf "geometric mean of secure/default: %.3f\n", exp(logsum / n)
  }' "$tmp/default" "$tmp/secure"
