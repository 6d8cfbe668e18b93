"""benchmarks/peak_memory.py: the memory of a command's whole process tree, which README's tables quote."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "benchmarks" / "peak_memory.py"

# Two children each hold 120 MiB at once, then the parent ends with exit code 3.
TREE = """
import subprocess, sys
code = "import time; b = bytearray(120 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(2)"
children = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
sys.exit(sum(c.wait() for c in children) + 3)
"""


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="Linux /proc only")
def test_the_sum_over_a_process_tree_and_each_process_peak(tmp_path: Path) -> None:
    log = tmp_path / "samples.txt"
    res = subprocess.run([sys.executable, str(TOOL), "--interval", "0.2", "--log", str(log), "--",
                          sys.executable, "-c", TREE], capture_output=True, text=True, timeout=60)
    assert res.returncode == 3, res.stderr  # the command's own exit code
    rss_sum = int(re.search(r"RSS summed over the processes \(largest sample\) \| ([\d,]+)", res.stderr)
                  .group(1).replace(",", ""))
    assert rss_sum >= 240, res.stderr  # both children at once (one process's RSS alone would be ~130)
    peaks = [int(m.replace(",", "")) for m in re.findall(r"^\| \d+ \| ([\d,]+) \| `", res.stderr, re.M)]
    assert len(peaks) == 3 and sorted(peaks)[-2] >= 120, res.stderr  # parent + two children, each its own peak
    assert len(log.read_text(encoding="utf-8").splitlines()) >= 5


def test_a_missing_command_is_one_line() -> None:
    res = subprocess.run([sys.executable, str(TOOL), "--", "/nonexistent/cmd"], capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 127 and res.stderr.strip().count("\n") == 0, res.stderr
    assert "cannot start '/nonexistent/cmd'" in res.stderr


def test_an_unwritable_log_is_refused_before_the_command_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    res = subprocess.run([sys.executable, str(TOOL), "--log", str(tmp_path / "no" / "such" / "dir.log"), "--",
                          sys.executable, "-c", f"open({str(marker)!r}, 'w')"], capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0, res.stderr
    assert "--log" in res.stderr and "No such file or directory" in res.stderr
    assert not marker.exists()
