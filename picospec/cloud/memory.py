"""What the cloud process holds in memory, for the soak that watches it grow.

Resident memory alone cannot tell a leak from an allocator that keeps freed memory: glibc's
mallinfo2 says how much of the heap is free but still held (its arenas' free chunks), so a
growing resident size with a growing free-held share is fragmentation, not live objects.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os


class _MallInfo2(ctypes.Structure):
    # glibc >= 2.33, every field a size_t (man 3 mallinfo2)
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]  # fmt: skip


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


_LIBC = _libc()
_MALLINFO2 = getattr(_LIBC, "mallinfo2", None)  # glibc >= 2.33 only: also what says the allocator is glibc's
if _MALLINFO2 is not None:
    _MALLINFO2.restype = _MallInfo2


def resident_bytes() -> int | None:
    """This process's resident memory now (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def heap_bytes() -> dict[str, int] | None:
    """glibc's heap over all arenas: bytes in use by live allocations and bytes free but held
    (None where the C library is not glibc >= 2.33)."""
    if _MALLINFO2 is None:
        return None
    info = _MALLINFO2()
    return {"in_use": info.uordblks + info.hblkhd, "free_held": info.fordblks}


# mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8
ARENA_MAX = 2
MMAP_THRESHOLD_BYTES = 256 * 2**10


def release_freed_memory() -> bool:
    """Make glibc give large freed blocks back rather than hold them: a fixed mmap threshold (by
    default it rises to the largest block freed, up to 32 MiB, so a pass's logits — rows x vocabulary
    floats — land in arenas and stay there once freed) and few arenas (one per thread otherwise, each
    holding its own peak). In a 16-session soak without this the cloud's live heap stayed flat while
    the free memory glibc held grew by ~330 MiB, the whole of the resident growth (docs/scaling.md).
    Call it once, at the start of a serving process; False where the C library is not glibc."""
    mallopt = getattr(_LIBC, "mallopt", None)
    if mallopt is None or _MALLINFO2 is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(_M_ARENA_MAX, ARENA_MAX))
