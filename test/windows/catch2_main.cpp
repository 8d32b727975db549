// The Catch2 runner, compiled once (it takes ~20 s with mingw) and linked into
// every Windows-side test program.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
