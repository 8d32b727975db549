#!/usr/bin/env bash
# Heap errors a program makes (test/hardening/errors.cpp), each in its own
# process: libgranule-secure.so must abort with one line naming the error,
# the address (and size class); libgranule.so must report it once (with
# GRANULE_SHOW_ERRORS=1, where it can detect it) and keep a working heap.
set -u
. "$(dirname "$0")/../../scripts/lib/common.sh"
cd "$GRANULE_ROOT"
build=build/test
prog=$build/test/hardening/errors
passed=0
failed=0
out=$(mktemp)
err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT

ok() { echo "ok   $1"; passed=$((passed + 1)); }
bad() {
  echo "FAIL $1: $2"
  sed 's/^/    stdout: /' "$out" | head -n 5
  sed 's/^/    stderr: /' "$err" | head -n 5
  failed=$((failed + 1))
}

# scenario, message in the secure build, message in the default build ("" = not detectable there)
while read -r scenario secure_msg default_msg; do
  default_msg=${default_msg//_/ }
  secure_msg=${secure_msg//_/ }
  LD_PRELOAD=$PWD/$build/libgranule-secure.so timeout -s KILL 60 "$prog" "$scenario" >"$out" 2>"$err"
  status=$?
  addr=$(sed -n 's/^ADDR //p' "$out")
  lines=$(grep -c '^granule: error:' "$err")
  if [ "$status" -ne 134 ]; then
    bad "secure $scenario" "exit status $status, expected abort (134)"
  elif [ "$lines" -ne 1 ] || ! grep -q "^granule: error: $secure_msg.* at $addr\b" "$err"; then
    bad "secure $scenario" "expected one line '$secure_msg at $addr'"
  elif [ "$scenario" != free-stack ] && ! grep -q "size class [0-9]* bytes" "$err"; then
    bad "secure $scenario" "no size class in the message"
  elif grep -q "HEAP OK" "$out"; then
    bad "secure $scenario" "kept running after the error"
  else
    ok "secure $scenario aborts: $(head -n1 "$err")"
  fi

  GRANULE_SHOW_ERRORS=1 LD_PRELOAD=$PWD/$build/libgranule.so timeout -s KILL 60 "$prog" "$scenario" >"$out" 2>"$err"
  status=$?
  addr=$(sed -n 's/^ADDR //p' "$out")
  lines=$(grep -c '^granule: error:' "$err")
  if [ "$status" -ne 0 ] || ! grep -q "HEAP OK" "$out"; then
    bad "default $scenario" "exit status $status, heap not verified"
  elif [ "$default_msg" = "-" ] && [ "$lines" -ne 0 ]; then
    bad "default $scenario" "unexpected report"
  elif [ "$default_msg" != "-" ] && { [ "$lines" -ne 1 ] || ! grep -q "^granule: error: $default_msg.* at $addr\b" "$err"; }; then
    bad "default $scenario" "expected one line '$default_msg at $addr'"
  else
    note=""
    [ "$default_msg" != "-" ] && note=" ($(head -n1 "$err"))"
    ok "default $scenario keeps a working heap$note"
  fi
done <<'LIST'
double-free-small double_free double_free
double-free-large double_free double_free
double-free-large-reused double_free double_free
double-free-huge double_free double_free
double-free-cross-thread double_free double_free
free-stack invalid_free invalid_free
free-interior free_of_an_interior free_of_an_interior
overflow heap_buffer_overflow -
write-after-free write_after_free -
LIST

# Without GRANULE_SHOW_ERRORS the default build stays silent.
LD_PRELOAD=$PWD/$build/libgranule.so "$prog" double-free-small >"$out" 2>"$err"
if [ $? -eq 0 ] && ! grep -q granule "$err"; then ok "default build is silent unless asked"; else bad "silent default" "reported without GRANULE_SHOW_ERRORS"; fi

echo "errors: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
