"""The host allocator's settings for a process that runs models on the CPU.

PyTorch's CPU tensors come straight from malloc. glibc gives freed memory at the top of its heap
back to the kernel once more than the trim threshold is free there (by default twice the largest
block it has handed out through mmap, at most 64 MiB), and a model whose activations swing by more
than that within one forward pass (DAT++ at batch 8: stage-1 attention and MLP tensors of 10 to
13 MB each) then grows the heap again on the next block: every new page is a fault the kernel
fills with zeros. DAT-T++ took some 40,000 such faults per bf16 batch of 8, about a tenth of its
time; DAT-T none. Keeping the peak heap instead costs nothing a served model would not need again
on its next batch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# The largest mmap threshold mallopt accepts on 64-bit (HEAP_MAX_SIZE / 2): blocks above it keep
# their own mapping (and are unmapped when freed), all others come from the heap.
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 1 * 2**30
# glibc's own variables for these: a process started with any of them keeps what it asked for.
_ENVIRONMENT = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")
_kept = False


def keep_freed_memory() -> bool:
    """Sets glibc's heap to keep up to ``TRIM_THRESHOLD`` of freed memory for reuse rather than
    return it to the kernel after every large free. Returns whether it did: not on other C
    libraries, nor where the environment already sets glibc's malloc (``MALLOC_*_`` or
    ``GLIBC_TUNABLES``), which wins. Call it once, at start-up, before the model runs."""
    if not sys.platform.startswith("linux") or any(name in os.environ for name in _ENVIRONMENT):
        return False
    libc = _glibc()
    if libc is None:
        return False
    global _kept
    # Either setting turns off glibc's own adjustment of both, so both are set.
    _kept = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    return _kept


def keeps_freed_memory() -> bool:
    """Whether :func:`keep_freed_memory` has set this process's heap."""
    return _kept


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
    except (OSError, TypeError):
        return None
    # only glibc has gnu_get_libc_version (musl's mallopt does nothing)
    if not (hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt")):
        return None
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    return libc
