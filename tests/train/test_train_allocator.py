import subprocess
import sys

from attnlab.train.allocator import keep_freed_memory


def test_keep_freed_memory_applies_on_glibc_and_is_harmless():
    # In a child process, so the test run's own allocator is untouched.
    code = "from attnlab.train.allocator import keep_freed_memory as k; import torch; r = k(); " \
           "x = [torch.ones(4_000_000) for _ in range(3)]; del x; print(r)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    libc = subprocess.run(["ldd", "--version"], capture_output=True, text=True)
    if "GLIBC" in (libc.stdout + libc.stderr).upper() and sys.platform.startswith("linux"):
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
