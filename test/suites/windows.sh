#!/usr/bin/env bash
# The Windows suites: mingw-w64 cross build, tests under Wine
# (scripts/test-windows). Ends with its "windows: N passed, N failed" line.
set -u
cd "$(dirname "$0")/../.."
# One test at a time: under Wine, windows-redirect-fallback (2-3 s alone)
# has hung past its timeout while the 25 s unit suite ran beside it.
scripts/test-windows --num-processes 1
