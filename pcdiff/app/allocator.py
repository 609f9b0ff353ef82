"""Process-wide memory-allocator setting for the command-line entry points.

A circuit pass allocates and frees many small tensors; glibc's malloc hands the top of its heap
back to the kernel whenever enough of it is free and faults the pages in again on the next
allocation. Depending on where a process's heap happens to sit, that happens on every pass: we
measured 6-7x more page faults and passes 1.6x slower on a small HMM, in 2 to 8 of every 10
processes started (it varied by batch). Asking malloc to grow and shrink the heap in 64 MiB steps
removes it, the way PyTorch's CPU launcher does by preloading jemalloc or tcmalloc. A process
setting, so only the ``pcdiff`` commands make it, never an import.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TOP_PAD = -2                      # glibc's <malloc.h>
HEAP_STEP = 64 * 1024 * 1024


def keep_heap_pages(step: int = HEAP_STEP) -> bool:
    """Set glibc malloc's top pad to ``step`` bytes; returns whether it took effect (False off
    glibc Linux, where allocators behave differently and nothing is changed)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_TOP_PAD, int(step)))
    except (OSError, AttributeError):            # musl and others: no mallopt
        return False
