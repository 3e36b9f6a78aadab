"""dosediff.heap: after keep_freed_memory a large tensor comes from the heap, not from mmap.

Checked through glibc's own accounting (mallinfo2: bytes in mmapped blocks), not through
dosediff's return value alone.
"""

from __future__ import annotations

import ctypes
import sys

import pytest
import torch

from dosediff.heap import keep_freed_memory


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _mmapped_bytes() -> int:
    fn = ctypes.CDLL(None).mallinfo2
    fn.restype = _MallInfo2
    return fn().hblkhd


@pytest.mark.skipif(not sys.platform.startswith("linux") or not hasattr(ctypes.CDLL(None), "mallinfo2"),
                    reason="needs glibc 2.33+ (mallinfo2)")
def test_large_tensor_not_mmapped_after_keep() -> None:
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # idempotent
    before = _mmapped_bytes()
    big = torch.empty(256 << 20, dtype=torch.uint8)  # 256 MiB: far over glibc's 32 MiB mmap ceiling
    big.fill_(1)
    assert _mmapped_bytes() - before < (1 << 20)
    del big
