"""Keep freed memory in the process for reuse (glibc), for CPU training, sampling and preprocessing.

glibc hands each freed block over its mmap threshold (at most 32 MiB) back to the kernel and
trims the heap top past twice that, so every step of a 128x128 batch maps and zero-fills its
activations anew: on a 2-core EPYC a third of a training step's CPU time was system time.
With mmap off and a 2 GiB trim threshold the blocks are reused; peak memory stays within a few
per cent (benchmarks/bench_vs_authors.py measures both). No effect on what is computed.
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's malloc.h
_TRIM_BYTES = 2**31 - 1  # mallopt takes an int
_state = {"kept": False}


def keep_freed_memory() -> bool:
    """Ask glibc to reuse freed memory; True once it agreed, False where libc is not glibc."""
    if _state["kept"] or not sys.platform.startswith("linux"):
        return _state["kept"]
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # absent on musl
    if mallopt is not None:
        _state["kept"] = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES))
    return _state["kept"]
