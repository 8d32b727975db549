// Memory for the allocator's own long-lived objects (heaps), taken from the
// OS directly so nothing is allocated through Granule itself. Never freed:
// objects are recycled by their owners.
#pragma once

#include <cstddef>

namespace granule {

// Zeroed, 64-byte aligned; nullptr when the OS refuses.
void* meta_alloc(size_t size);

// fork(): held across it (the last lock taken: segment_create allocates
// under heap locks), so that a child never inherits it held.
void meta_lock();
void meta_unlock(bool in_child);

}  // namespace granule
