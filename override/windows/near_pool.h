// Executable memory near a given address (within a rel32 jump of it), for
// relays and trampolines. Carved out of 64 KiB chunks that are reserved as
// close as possible to the code they serve; never freed (patches are never
// removed). Not thread-safe: the patcher serializes calls.
#pragma once

#include <cstddef>
#include <cstdint>

namespace granule::win {

// `size` bytes of read-write-execute memory, 16-byte aligned, whose every
// byte is within +-(2 GiB - 64 KiB) of `anchor`; nullptr when none is found.
uint8_t* near_alloc(const void* anchor, size_t size);

}  // namespace granule::win
