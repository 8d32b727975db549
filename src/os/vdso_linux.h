#pragma once

#include <time.h>

namespace granule::os {

using VdsoClock = int (*)(clockid_t, struct timespec*);

// The vDSO's clock_gettime, or nullptr when the image has none we can find.
// Walks the image's symbol table: call once and keep the result.
VdsoClock vdso_clock_gettime();

}  // namespace granule::os
