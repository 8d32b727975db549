#!/usr/bin/env bash
# Options from the environment and statistics at exit, through scripts/run.
set -u
. "$(dirname "$0")/../../scripts/lib/common.sh"
cd "$GRANULE_ROOT"
passed=0
failed=0
result() {  # result NAME STATUS [DETAIL]
  if [ "$2" -eq 0 ]; then
    echo "ok   $1"
    passed=$((passed + 1))
  else
    echo "FAIL $1 ${3:-}"
    failed=$((failed + 1))
  fi
}
py=/usr/bin/python3

out=$(GRANULE_PURGE_DELAY=garbage scripts/run $py -c 'print(6*7)' 2>/tmp/granule-opt.err)
warnings=$(grep -c 'GRANULE_PURGE_DELAY=garbage' /tmp/granule-opt.err)
[ "$out" = 42 ] && [ "$warnings" -eq 1 ]
result "a bad GRANULE_PURGE_DELAY warns once and the program runs" $? "(out '$out', $warnings warnings)"

out=$(GRANULE_VERBOSE=maybe GRANULE_SHOW_ERRORS=2 scripts/run $py -c 'print(1)' 2>/tmp/granule-opt.err)
[ "$out" = 1 ] && [ "$(grep -c warning /tmp/granule-opt.err)" -eq 2 ]
result "every bad option value warns, none crashes" $?

GRANULE_SHOW_STATS=1 scripts/run $py -c pass 2>/tmp/granule-opt.err
grep -q '^granule: stats' /tmp/granule-opt.err && grep -q 'committed' /tmp/granule-opt.err
result "GRANULE_SHOW_STATS=1 python3 -c pass prints the summary at exit" $?

scripts/run $py -c pass 2>/tmp/granule-opt.err
[ ! -s /tmp/granule-opt.err ]
result "no option: nothing on stderr" $?

$py - "$GRANULE_ROOT/build/release/libgranule.so" <<'PY'
import ctypes, json, sys
lib = ctypes.CDLL(sys.argv[1])
lib.gr_malloc.restype = ctypes.c_void_p
lib.gr_malloc.argtypes = [ctypes.c_size_t]
lib.gr_free.argtypes = [ctypes.c_void_p]
blocks = [lib.gr_malloc(100) for _ in range(1000)]
buf = ctypes.create_string_buffer(65536)
n = lib.gr_stats_json(buf, ctypes.c_size_t(len(buf)))
stats = json.loads(buf.value.decode())
assert n == len(buf.value), (n, len(buf.value))
assert stats["in_use"] >= 100 * 1000, stats["in_use"]
assert any(c["size"] == 112 and c["live"] >= 1000 for c in stats["classes"]), stats["classes"][:10]
for b in blocks: lib.gr_free(b)
lib.gr_option_get.restype = ctypes.c_long
assert lib.gr_option_get(3) >= 0
PY
result "gr_stats_json is valid JSON with live counts per class" $?

rm -f /tmp/granule-opt.err
echo "options: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
