#!/bin/sh
# check_imports.sh NM LIB...: the Windows OS layer and patcher must call
# nothing but the Windows API (no C runtime: it may be what we replace, and a
# CRT-free granule.dll can initialise before msvcrt/ucrtbase). Fails when an
# object in LIB... needs any other undefined symbol (Windows API imports are
# __imp_ + a capitalised name; CRT ones such as __imp_malloc are not). With
# LTO the objects' symbol tables name the API without the __imp_ prefix, so a
# bare capitalised name is accepted too.
nm="$1"
shift
bad=$("$nm" -u "$@" | awk 'NF == 2 && $1 == "U" { print $2 }' | sort -u |
  grep -v -E '^((__imp_)?[A-Z][A-Za-z0-9]+|_ZN7granule[A-Za-z0-9_]+|(Acquire|Release)SRWLock(Exclusive|Shared))$')
if [ -n "$bad" ]; then
  echo "non-Windows-API symbols needed:"
  echo "$bad"
  exit 1
fi
"$nm" -u "$@" | awk 'NF == 2 && $1 == "U" { print $2 }' | sort -u | sed 's/^__imp_//' | tr '\n' ' '
echo
echo "ok: Windows API only"
