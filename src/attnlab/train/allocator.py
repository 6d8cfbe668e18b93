"""Process-wide memory settings for training: glibc's allocator (a no-op elsewhere) and the kernel caches.

By default glibc hands large freed blocks (the logits and their gradients, tens of MiB) back to the kernel
after every step and faults them in again on the next one. Keeping them mapped measured +23-40% training
tokens/s on a 2-core CPU (``benchmarks/train_throughput.py --keep-freed-memory``). The cost: the process keeps
its peak memory resident. Called by the ``attnlab train`` and ``attnlab demo`` commands, which own their
process -- never on import.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library if it is glibc (it has ``mallopt`` and ``malloc_trim``), else ``None``."""
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return None
    if hasattr(libc, "mallinfo2"):  # glibc 2.33 and later
        libc.mallinfo2.restype = _MallInfo2
    return libc


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory (no trimming, no per-allocation mmap); ``True`` if it took effect."""
    libc = _glibc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    log.debug("glibc mallopt keep-freed-memory: %s", ok)
    return ok


def release_freed_memory() -> bool:
    """Give the heap's free pages back to the kernel now (glibc's ``malloc_trim(0)``, which also releases whole
    free pages inside the heap, not only at its top); ``True`` if glibc is there to do it.

    The trainer calls it where the step loop pauses: rank 0 after each evaluation (whose differently shaped
    decoding buffers would otherwise stay resident, and fragment the heap the steps reuse), the other ranks
    when they start waiting for it, and every rank when training ends. The next steps fault back in only the
    pages they touch: under :func:`keep_freed_memory` they keep their speed (the Multi30k En-De recipe: 1,500
    MiB summed over its two processes against 1,537, at the same logged tokens/s; README, "Speed and memory").
    """
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def heap_bytes_in_use() -> int | None:
    """Bytes the process's allocations hold now (glibc's ``mallinfo2``: heap chunks in use plus mapped blocks),
    unlike RSS blind to freed memory the heap keeps; ``None`` without glibc 2.33+. For measuring what a piece of
    code keeps alive (``benchmarks/train_kernels.py``)."""
    libc = _glibc()
    fn = getattr(libc, "mallinfo2", None) if libc is not None else None
    if fn is None:
        return None
    info = fn()
    return info.uordblks + info.hblkhd


KERNEL_CACHE_CAPACITY = 16
"""Entries kept by oneDNN's primitive cache and PyTorch's mkldnn LRU cache (both default to 1024). 16 rather than
32: 200 steps of the two-process Multi30k recipe peaked at 1,394-1,398 MiB summed against 1,498-1,507, and a whole
60-minute run at 1,490 MiB (Pss 1,380) against 1,603 (Pss 1,493) with 32, at no lower speed (README, "Speed and
memory")."""


def cap_kernel_caches(capacity: int = KERNEL_CACHE_CAPACITY) -> None:
    """Bound the kernel caches of oneDNN (``ONEDNN_PRIMITIVE_CACHE_CAPACITY``) and PyTorch's mkldnn path
    (``LRU_CACHE_CAPACITY``), unless the environment already sets them.

    Under bf16 every new (batch, length) shape of a length-bucketed epoch compiles and keeps its own matmul
    primitives: a Multi30k Transformer-tiny run grew from 651 to 1,478 MiB resident over its first 50 steps (about
    80 shapes per epoch) and stayed near 850-960 MiB with the caches at 32 entries, at the same speed (42-43 s per
    50 steps against 41-48 s). Read lazily by the libraries, so it works when called before the first matmul.
    """
    for name in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
        os.environ.setdefault(name, str(capacity))
