// Process life (init.cpp), for the entry points that don't come from the
// platform's constructors: granule.dll's DllMain on Windows.
#pragma once

namespace granule {

// Options, thread-exit hook, purge thread allowed. Safe to call more than once.
void process_start();
// Statistics at exit when GRANULE_SHOW_STATS=1. Tears nothing down.
void process_exit();

}  // namespace granule
