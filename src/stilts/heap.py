"""The C allocator's settings for a process that trains.

glibc serves an allocation above its mmap threshold (which it raises to at most 32 MB) with a fresh mapping
and unmaps it again when it is freed, so a tensor that large costs its size in zero-filled page faults every
time it is made: MiniLM's word-embedding gradient (47 MB) is made in every backward pass. Served from the
heap and never trimmed, freed memory is reused as it is: a MiniLM step of 16 × 64 tokens then took no page
faults instead of ~52,000, and 11% less CPU time (benchmarks/heap_faults.py; docs/performance.md). A
process that trains ends when its cell does, so the memory kept is the peak it had anyway.
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1  # from malloc.h
_M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Serve every allocation from the heap and keep freed memory mapped; whether the allocator took it (glibc
    on Linux; elsewhere nothing changes)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1))
