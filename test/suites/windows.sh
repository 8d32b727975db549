#!/usr/bin/env bash
# The Windows suites: mingw-w64 cross build, tests under Wine
# (scripts/test-windows). Ends with its "windows: N passed, N failed" line.
set -u
cd "$(dirname "$0")/../.."
scripts/test-windows --num-processes 2
