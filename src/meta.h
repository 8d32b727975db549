// Memory for the allocator's own long-lived objects (heaps), taken from the
// OS directly so nothing is allocated through Granule itself. Never freed:
// objects are recycled by their owners.
#pragma once

#include <cstddef>

namespace granule {

// Zeroed, 64-byte aligned; nullptr when the OS refuses.
void* meta_alloc(size_t size);

}  // namespace granule
