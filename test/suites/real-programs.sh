#!/usr/bin/env bash
# Real programs from Debian packages (scripts/deps/linux-programs.txt) under
# scripts/run: the same output and exit status as without Granule, and proof
# (GRANULE_SHOW_STATS=1: "allocations N" at exit, on a kept copy of stderr)
# that their allocations went through Granule.
set -u
. "$(dirname "$0")/../../scripts/lib/common.sh"
cd "$GRANULE_ROOT"
work=$(mktemp -d)
redis_pid=
trap '[ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null; rm -rf "$work"' EXIT
passed=0
failed=0

# The largest "allocations N" any process of the run reported.
allocations_in() {
  sed -n 's/.*allocations \([0-9]*\),.*/\1/p' "$1" | sort -n | tail -n1
}

# check NAME FILTER COMMAND...: stdout (through FILTER, a shell command that
# drops what legitimately differs between runs, e.g. timings) and exit status
# equal with and without Granule; Granule reports allocations.
check() {
  local name=$1 filter=$2
  shift 2
  (cd "$work" && "$@") 2>/dev/null | (cd "$work" && eval "$filter") >"$work/plain.out"
  local plain_status=${PIPESTATUS[0]}
  local stats=1
  [ -n "${GRANULE_NO_STATS:-}" ] && stats=0
  (cd "$work" && GRANULE_SHOW_STATS=$stats "$GRANULE_ROOT/scripts/run" "$@") 2>"$work/gr.err" |
    (cd "$work" && eval "$filter") >"$work/gr.out"
  local gr_status=${PIPESTATUS[0]}
  local allocations
  allocations=$(allocations_in "$work/gr.err")
  if [ -n "${GRANULE_NO_STATS:-}" ]; then
    # The same interpreter and test runner, one module, with statistics.
    (cd "$work" && GRANULE_SHOW_STATS=1 "$GRANULE_ROOT/scripts/run" "$1" -m test test_bisect) \
      >/dev/null 2>"$work/proof.err"
    allocations=$(allocations_in "$work/proof.err")
  fi
  if [ "$plain_status" -eq "$gr_status" ] && cmp -s "$work/plain.out" "$work/gr.out" &&
    [ -s "$work/gr.out" ] && [ "${allocations:-0}" -gt 0 ]; then
    echo "ok   $name (exit $gr_status, $(wc -l <"$work/gr.out") lines equal, $allocations blocks from granule)"
    passed=$((passed + 1))
  else
    echo "FAIL $name (exit $plain_status vs $gr_status, allocations '${allocations}')"
    diff "$work/plain.out" "$work/gr.out" | head -n 20
    grep -v '^  ' "$work/gr.err" | head -n 20
    failed=$((failed + 1))
  fi
}

# --- python3: its own regression tests (Debian's interpreter and testsuite).
# Timings differ between runs; the per-test verdicts and the summary must not.
py_tests="test_dict test_list test_json test_re test_threading test_collections test_itertools
  test_set test_string test_unicode test_struct test_heapq test_bisect test_deque test_weakref
  test_gc test_functools test_operator test_sort test_bytes"
# Its tests start subprocesses and some assert on their stderr, where
# GRANULE_SHOW_STATS would print: the comparison runs without it (still
# preloaded, subprocesses included), check_proof then shows Python's
# allocations going through Granule.
# shellcheck disable=SC2086
GRANULE_NO_STATS=1 check "python3 -m test (20 modules)" \
  "grep -E 'tests? OK|Tests result|failed|skipped|^ *test_' | sed -E 's/^[0-9:]+ load avg: [0-9.]+ //; s/\\[ *[0-9]+\\/[0-9]+\\] //; s/ \\([0-9.]+ ?(ms|sec)\\)//' | sort" \
  /usr/bin/python3 -m test $py_tests

# --- sqlite3 on a generated workload (a fresh database file each run).
cat >"$work/workload.sql" <<'SQL'
CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, grp INT, val REAL);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000)
  INSERT INTO t SELECT x, printf('name-%08d-%s', x, hex(x * 7919)), x % 97, x * 0.5 FROM c;
CREATE INDEX t_grp ON t(grp);
CREATE INDEX t_name ON t(name);
SELECT grp, count(*), sum(val), max(name) FROM t GROUP BY grp ORDER BY grp LIMIT 10;
CREATE TABLE u AS SELECT grp, group_concat(substr(name, 1, 14), ',') AS names FROM t WHERE id % 13 = 0 GROUP BY grp;
SELECT count(*), sum(length(names)) FROM u;
SELECT t.grp, count(*) FROM t JOIN u ON t.grp = u.grp WHERE t.id < 50000 GROUP BY t.grp ORDER BY 2 DESC, 1 LIMIT 5;
UPDATE t SET name = name || '-updated-' || hex(randomblob(0)) WHERE id % 3 = 0;
DELETE FROM t WHERE id % 5 = 0;
SELECT count(*), sum(length(name)), min(name), max(name) FROM t;
WITH RECURSIVE f(n, v) AS (SELECT 1, 1 UNION ALL SELECT n + 1, (v * 31 + n) % 1000003 FROM f WHERE n < 100000)
  SELECT max(v), sum(v) FROM f;
VACUUM;
PRAGMA integrity_check;
SQL
check "sqlite3 (200k rows: inserts, indexes, joins, updates, vacuum)" cat \
  bash -c 'rm -f work.db && sqlite3 work.db < workload.sql'

# --- git on a fresh repository (fixed dates: the same hashes every run).
cat >"$work/git.sh" <<'SH'
set -e
rm -rf repo && mkdir repo && cd repo
export GIT_AUTHOR_DATE='2020-01-01T00:00:00Z' GIT_COMMITTER_DATE='2020-01-01T00:00:00Z'
export GIT_CONFIG_NOSYSTEM=1 HOME=$PWD/..
git init -q -b main .
git config user.name Granule && git config user.email granule@example.invalid
for i in $(seq 1 200); do seq "$i" $((i * 20)) > "file$i.txt"; done
git add . && git commit -qm initial
git checkout -qb feature
for i in $(seq 1 50); do echo "feature $i" >> "file$i.txt"; done
git commit -qam feature
git checkout -q main
for i in $(seq 150 200); do echo "main $i" >> "file$i.txt"; done
git commit -qam main-work
git merge -q --no-edit feature
git log --oneline --graph
git diff --stat HEAD~2 HEAD | tail -n 1
git gc -q --aggressive
git fsck --full
git count-objects -v | grep -E '^(count|in-pack|packs)'
git grep -c 'feature' | wc -l
git archive HEAD | tar -t | wc -l
SH
check "git (init, commits, branch, merge, gc, fsck, grep, archive)" cat bash "$work/git.sh"

# --- perl and lua5.4 scripts.
cat >"$work/work.pl" <<'PL'
use strict; use warnings;
my %h; my @a;
for my $i (1 .. 200000) { my $k = sprintf("key%06d", ($i * 7919) % 100003); $h{$k} .= chr(65 + $i % 26); push @a, $k if $i % 7 == 0; }
my @sorted = sort { length($h{$b}) <=> length($h{$a}) or $a cmp $b } keys %h;
my $joined = join(",", @sorted[0 .. 9]);
my $count = () = join("", values %h) =~ /ABC/g;
my @closures = map { my $n = $_; sub { $n * $_[0] } } 1 .. 1000;
my $sum = 0; $sum += $_->(3) for @closures;
printf "%d keys, %d kept, top %s, ABC %d, sum %d\n", scalar(keys %h), scalar(@a), $joined, $count, $sum;
PL
check "perl (hashes, sort, regex, closures)" cat perl "$work/work.pl"
cat >"$work/work.lua" <<'LUA'
local t, parts = {}, {}
for i = 1, 200000 do t[("k%06d"):format((i * 7919) % 100003)] = string.rep("x", i % 50) end
local n, total = 0, 0
for k, v in pairs(t) do n = n + 1; total = total + #v end
for i = 1, 20000 do parts[#parts + 1] = tostring(i * i) end
local s = table.concat(parts, ",")
local words = 0
for _ in s:gmatch("%d+") do words = words + 1 end
local objs = {}
for i = 1, 100000 do objs[i] = { id = i, name = "obj" .. i, tags = { i % 3, i % 5 } } end
table.sort(objs, function(a, b) return a.name < b.name end)
collectgarbage("collect")
print(n, total, #s, words, objs[1].name, objs[#objs].name)
LUA
check "lua5.4 (tables, strings, sort, gc)" cat lua5.4 "$work/work.lua"

# --- a g++ compile (the compiler's own allocations) and the compiled program.
cat >"$work/prog.cpp" <<'CPP'
#include <algorithm>
#include <iostream>
#include <map>
#include <regex>
#include <string>
#include <unordered_map>
#include <vector>
int main() {
  std::unordered_map<std::string, std::vector<int>> m;
  for (int i = 0; i < 100000; ++i) m["k" + std::to_string(i % 1009)].push_back(i);
  std::map<size_t, std::string> by_size;
  for (auto& [k, v] : m) by_size[v.size() * 100000 + std::stoul(k.substr(1))] = k;
  std::regex re("k(1+)0");
  int matches = 0;
  for (auto& [k, v] : m) matches += std::regex_match(k, re);
  std::cout << m.size() << " " << by_size.begin()->second << " " << matches << "\n";
}
CPP
check "g++ -O2 compile and run" cat bash -c 'g++ -O2 -std=c++20 -o prog prog.cpp && ./prog'

# --- redis-server on 127.0.0.1 (a free port), driven by redis-benchmark for
# a bounded number of requests and by a deterministic redis-cli script, then
# stopped by its PID. Debian's redis-server links libjemalloc, but it calls
# the plain names (malloc, calloc, realloc, free, malloc_usable_size): the
# preloaded Granule comes first in the lookup order, so all of Redis's own
# objects are Granule's. Still jemalloc's: the jemalloc-only calls (nallocx,
# mallctl for INFO's allocator_* figures, MEMORY MALLOC-STATS, active
# defragmentation), which see an idle jemalloc: those are not exercised.
free_port() {
  /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
cat >"$work/redis.lua" <<'LUA'
for i = 1, 20000 do redis.call('SET', 'k' .. i, string.rep('v', i % 700)) end
for i = 1, 2000 do redis.call('RPUSH', 'list', string.rep('l', i % 90)) end
for i = 1, 5000 do redis.call('HSET', 'hash', 'f' .. i, i * i) end
for i = 1, 20000, 3 do redis.call('DEL', 'k' .. i) end
for i = 1, 20000, 7 do redis.call('APPEND', 'k' .. i, string.rep('a', 1000)) end
local total = 0
for i = 1, 20000 do local v = redis.call('GET', 'k' .. i); if v then total = total + #v end end
return {redis.call('DBSIZE'), total, redis.call('LLEN', 'list'), redis.call('HLEN', 'hash'),
        redis.call('HGET', 'hash', 'f4999')}
LUA
# run_redis MODE OUT ERR: MODE "plain" or "granule"; stdout of the clients to OUT.
run_redis() {
  local mode=$1 out=$2 err=$3 port
  port=$(free_port)
  local cmd=(redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no)
  if [ "$mode" = granule ]; then
    GRANULE_SHOW_STATS=1 "$GRANULE_ROOT/scripts/run" "${cmd[@]}" >"$work/redis-$mode.log" 2>"$err" &
  else
    "${cmd[@]}" >"$work/redis-$mode.log" 2>"$err" &
  fi
  redis_pid=$!
  local i
  for i in $(seq 1 100); do
    [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && break
    sleep 0.1
  done
  {
    redis-benchmark -h 127.0.0.1 -p "$port" -n 20000 -c 8 -r 5000 -q -t set,get,incr,lpush,lpop,sadd,hset,mset 2>&1 |
      tr '\r' '\n' | sed -n 's/^\([A-Z_]*\)[:( ].*requests per second.*/\1 done/p' | sort -u
    redis-cli -p "$port" flushall
    redis-cli -p "$port" --eval "$work/redis.lua"
    redis-cli -p "$port" info memory | grep -E '^mem_allocator' | tr -d '\r'
  } >"$out"
  kill -TERM "$redis_pid"
  wait "$redis_pid"
  local status=$?
  redis_pid=
  return $status
}
if command -v redis-server >/dev/null; then
  run_redis plain "$work/redis-plain.out" "$work/redis-plain.err"
  plain_status=$?
  run_redis granule "$work/redis-gr.out" "$work/redis-gr.err"
  gr_status=$?
  allocations=$(allocations_in "$work/redis-gr.err")
  benchmarks=$(grep -c ' done$' "$work/redis-gr.out")
  if [ "$plain_status" -eq "$gr_status" ] && cmp -s "$work/redis-plain.out" "$work/redis-gr.out" &&
    [ "$benchmarks" -eq 8 ] && [ "${allocations:-0}" -gt 0 ]; then
    echo "ok   redis-server + redis-benchmark (8 x 20000 requests, $(grep mem_allocator "$work/redis-gr.out")," \
      "exit $gr_status, $allocations blocks from granule)"
    echo "     (Redis's objects come from Granule through malloc/free; jemalloc-only calls such as"
    echo "      nallocx/mallctl, INFO's allocator_* figures and active defrag still see jemalloc.)"
    passed=$((passed + 1))
  else
    echo "FAIL redis (exit $plain_status vs $gr_status, $benchmarks benchmarks, allocations '${allocations}')"
    diff "$work/redis-plain.out" "$work/redis-gr.out" | head -n 20
    tail -n 20 "$work/redis-granule.log" "$work/redis-gr.err"
    failed=$((failed + 1))
  fi
else
  echo "FAIL redis-server not installed"
  failed=$((failed + 1))
fi

echo "real-programs: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
