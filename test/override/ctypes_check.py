"""libgranule.so loaded into a running Python with ctypes.CDLL (dlopen,
RTLD_LOCAL): no static-TLS failure, and the gr_* API works."""
import ctypes
import sys

lib = ctypes.CDLL(sys.argv[1])
lib.gr_version.restype = ctypes.c_int
lib.gr_malloc.restype = ctypes.c_void_p
lib.gr_malloc.argtypes = [ctypes.c_size_t]
lib.gr_free.argtypes = [ctypes.c_void_p]
lib.gr_owns.restype = ctypes.c_bool
lib.gr_owns.argtypes = [ctypes.c_void_p]
lib.gr_usable_size.restype = ctypes.c_size_t
lib.gr_usable_size.argtypes = [ctypes.c_void_p]

version = lib.gr_version()
assert version == (0 << 16) | (1 << 8) | 0, hex(version)
blocks = []
for n in (1, 100, 5000, 100000, 3 << 20):
    p = lib.gr_malloc(n)
    assert p and lib.gr_owns(p), n
    assert lib.gr_usable_size(p) >= n
    ctypes.memset(p, 0x5A, n)
    blocks.append((p, n))
for p, n in blocks:
    assert ctypes.string_at(p, n) == b"\x5a" * n
    lib.gr_free(p)
# Python's own objects were not handed to Granule (not preloaded).
buf = ctypes.create_string_buffer(64)
assert not lib.gr_owns(ctypes.addressof(buf))
print("ctypes: gr_version %#x, %d blocks ok" % (version, len(blocks)))
