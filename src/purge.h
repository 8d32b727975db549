// Returning memory while the program is idle: a background thread, started
// the first time something becomes purgeable, wakes every eighth of the
// purge delay while work is pending and sleeps otherwise.
#pragma once

#include <cstdint>

namespace granule {

// Something became purgeable (slices, a segment, a cached huge block).
void purge_notify();
// Something is due now (a huge block that a bigger one outgrew): the purge
// thread, if running, passes within about kPurgeSoonMs instead of its interval.
inline constexpr uint32_t kPurgeSoonMs = 1;
void purge_notify_soon();
// The purge delay or thread option changed: a waiting thread looks again
// (memory may wait on the old delay, or on "never"), and a thread the old
// options kept from starting starts.
void purge_options_changed();
// After the library's constructor ran: starting a thread is now safe.
void purge_allow_thread();
// No thread heap is live any more (the last allocating thread is exiting):
// the purge thread quits, so that it is not the one thread keeping a process
// alive whose threads all ended with pthread_exit. A later notify restarts it.
void purge_stop();
// In a fork child: the thread did not survive the fork.
void purge_after_fork_child();

}  // namespace granule
