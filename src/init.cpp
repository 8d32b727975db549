// Process life: start-up (after libc is ready), fork, exit. malloc may run
// long before this (from the dynamic loader or other constructors); it
// initialises itself lazily and needs nothing from here to be correct.
#include "granule.h"
#include "heap.h"
#include "huge.h"
#include "meta.h"
#include "options.h"
#include "os/os.h"
#include "purge.h"

namespace granule {
namespace {

void before_fork() {
  heap_lock_all();
  huge_lock();
  meta_lock();
}
void after_fork_parent() {
  meta_unlock(false);
  huge_unlock();
  heap_unlock_all(false);
}
void after_fork_child() {
  meta_unlock(true);
  huge_reset_lock();
  heap_unlock_all(true);
  heap_abandon_others_in_child();
  purge_after_fork_child();
}

}  // namespace

void register_fork_handlers() {
  os::atfork_register(before_fork, after_fork_parent, after_fork_child);
}

void process_start() {
  heap_process_init();
  options_init_late();
  if (option(GR_OPTION_SHOW_STATS)) os::keep_stderr();
  purge_allow_thread();
}

void process_exit() {
  if (option(GR_OPTION_SHOW_STATS)) gr_stats_print();
}

}  // namespace granule

#if !defined(_WIN32)
// Priority 101: before ordinary constructors, so the program's own start-up
// already sees options and the fork handlers.
__attribute__((constructor(101))) static void granule_start() { granule::process_start(); }
__attribute__((destructor(101))) static void granule_exit() { granule::process_exit(); }
#endif
