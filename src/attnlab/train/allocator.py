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
import logging
import os
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory (no trimming, no per-allocation mmap); ``True`` if it took effect."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    log.debug("glibc mallopt keep-freed-memory: %s", ok)
    return ok


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
