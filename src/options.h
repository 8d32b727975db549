// Run-time options: GRANULE_<NAME> environment variables, read without libc
// at start-up, and gr_option_get/set.
#pragma once

#include <atomic>

#include "granule.h"

namespace granule {

struct OptionInfo {
  const char* name;  // without the GRANULE_ prefix
  long default_value;
  long min, max;
};

extern std::atomic<long> g_options[GR_OPTION_COUNT_];

inline long option(gr_option_t o) { return g_options[o].load(std::memory_order_relaxed); }
// Parse the environment once; a value that doesn't parse warns and keeps the default.
void options_init();
// At start-up (constructor): read the environment if options_init ran before
// it existed.
void options_init_late();
const OptionInfo& option_info(gr_option_t o);
// What gr_option_set stores (the api layer adds waking the purge thread).
bool option_set(gr_option_t o, long value);

}  // namespace granule
