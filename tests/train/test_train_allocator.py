import subprocess
import sys

import pytest

from attnlab.train.allocator import keep_freed_memory


def test_keep_freed_memory_applies_on_glibc_and_is_harmless():
    # In a child process, so the test run's own allocator is untouched.
    code = "from attnlab.train.allocator import keep_freed_memory as k; import torch; r = k(); " \
           "x = [torch.ones(4_000_000) for _ in range(3)]; del x; print(r)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    if "GLIBC" in _ldd_version() and sys.platform.startswith("linux"):
        assert out == "True"
    else:
        assert out == "False"
    assert callable(keep_freed_memory)


def test_cap_kernel_caches_sets_both_caches_unless_the_user_did(monkeypatch):
    from attnlab.train.allocator import KERNEL_CACHE_CAPACITY, cap_kernel_caches

    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "7")  # the user's own setting wins
    cap_kernel_caches()
    import os

    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == str(KERNEL_CACHE_CAPACITY)
    assert os.environ["LRU_CACHE_CAPACITY"] == "7"


def test_release_freed_memory_gives_the_kept_heap_back():
    # Under keep_freed_memory, 200 MiB freed stays resident until release_freed_memory (in a child process).
    code = """
import re
import torch
from attnlab.train.allocator import keep_freed_memory, release_freed_memory
def rss():
    return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) // 1024
assert keep_freed_memory()
x = [torch.ones(1_000_000) for _ in range(50)]  # 50 x 4 MB from the heap (no mmap under keep_freed_memory)
del x
kept = rss()
print(release_freed_memory(), kept - rss())
"""
    if not (sys.platform.startswith("linux") and "GLIBC" in _ldd_version()):
        from attnlab.train.allocator import release_freed_memory

        assert release_freed_memory() is False
        return
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "True"
    assert int(out[1]) > 150, f"only {out[1]} MiB given back"


def _ldd_version() -> str:
    libc = subprocess.run(["ldd", "--version"], capture_output=True, text=True)
    return (libc.stdout + libc.stderr).upper()


def test_heap_bytes_in_use_counts_live_allocations():
    import torch

    from attnlab.train.allocator import heap_bytes_in_use

    before = heap_bytes_in_use()
    if before is None:
        pytest.skip("no glibc mallinfo2 (glibc 2.33 or later) here")
    x = torch.ones(8_000_000)  # 32 MB
    grown = heap_bytes_in_use() - before
    del x
    assert 31_000_000 < grown < 40_000_000
