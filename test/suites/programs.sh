#!/usr/bin/env bash
# Real programs under scripts/run: the same output as without Granule, and
# proof (GRANULE_SHOW_STATS) that their allocations went through Granule.
set -u
. "$(dirname "$0")/../../scripts/lib/common.sh"
cd "$GRANULE_ROOT"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

# check NAME COMMAND...: stdout and exit status equal with and without
# Granule; Granule's exit summary reports allocations.
check() {
  local name=$1
  shift
  (cd "$work" && "$@") >"$work/plain.out" 2>/dev/null
  local plain_status=$?
  (cd "$work" && GRANULE_SHOW_STATS=1 "$GRANULE_ROOT/scripts/run" "$@") >"$work/gr.out" 2>"$work/gr.err"
  local gr_status=$?
  local allocations
  allocations=$(sed -n 's/.*allocations \([0-9]*\),.*/\1/p' "$work/gr.err" | head -n1)
  if [ "$plain_status" -eq "$gr_status" ] && cmp -s "$work/plain.out" "$work/gr.out" &&
    [ "${allocations:-0}" -gt 0 ]; then
    echo "ok   $name (exit $gr_status, $allocations blocks from granule)"
    passed=$((passed + 1))
  else
    echo "FAIL $name (exit $plain_status vs $gr_status, allocations '${allocations}')"
    diff "$work/plain.out" "$work/gr.out" | head -n 20
    head -n 20 "$work/gr.err"
    failed=$((failed + 1))
  fi
}

cat >"$work/workload.py" <<'PY'
import collections, json, re, threading
d = {i: str(i) * (i % 17) for i in range(100000)}
words = collections.Counter(re.findall(r"\w+", json.dumps(d)))
def worker(n):
    return sum(len(str(list(range(k)))) for k in range(n))
out = []
threads = [threading.Thread(target=lambda: out.append(worker(300))) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(len(d), len(words), sorted(out))
PY
check python3 /usr/bin/python3 "$work/workload.py"
# Not "/": its /proc entry's link count is the number of processes, which
# changes between the two runs.
check ls ls -la /usr
cat >"$work/prog.cpp" <<'CPP'
#include <iostream>
#include <map>
#include <string>
#include <vector>
int main() {
  std::map<std::string, std::vector<int>> m;
  for (int i = 0; i < 1000; ++i) m[std::to_string(i % 97)].push_back(i);
  std::cout << m.size() << " " << m["5"].size() << "\n";
}
CPP
check g++ g++ -O1 -o prog "$work/prog.cpp"
check compiled-program bash -c "g++ -O1 -o prog2 prog.cpp && ./prog2"

echo "programs: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
