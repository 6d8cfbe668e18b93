"""Peak memory of a whole command and of every process it starts (Linux): what `/usr/bin/time -v` cannot say.

Run: python benchmarks/peak_memory.py [--interval 1] [--log FILE] -- COMMAND [ARGS...]

`/usr/bin/time -v` reports the largest resident set of one process. A command that starts workers
(``attnlab train`` with ``train.processes: 2``, torchrun) holds the sum of its processes, and each of them maps
the same shared libraries (libtorch alone is ~100 MiB resident in each). This runs COMMAND, and every
``--interval`` seconds reads ``/proc/PID/smaps_rollup`` of COMMAND and all its descendants:

* RSS summed over the processes, at its largest sample (shared library pages counted once per process);
* Pss summed, at its largest sample (each shared page divided among the processes that map it: the memory the
  group really takes);
* per process, the kernel's own peak (``VmHWM``, exact between samples too) and its command line.

The summed figures are sampled, so a peak shorter than ``--interval`` can be missed; the per-process peaks are
not. ``--log FILE`` writes every sample as it is taken (time, then ``pid:rss/pss`` in MiB per process); a path
that cannot be written is refused before COMMAND starts (exit 2). The exit code is COMMAND's; SIGINT and SIGTERM
are passed on to it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

MIB = 1024


@dataclass
class Peaks:
    """What the sampler saw: the group's largest sums and each process's own peak (MiB)."""

    rss_sum: int = 0
    rss_sum_at: float = 0.0
    pss_sum: int = 0
    pss_sum_at: float = 0.0
    hwm: dict[int, int] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    samples: int = 0


def descendants(root: int) -> list[int]:
    """``root`` and every live process below it (from each process's ``PPid``)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="utf-8") as fh:
                stat = fh.read()
        except OSError:  # ended meanwhile
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name in parentheses may hold spaces
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _fields(path: str, names: tuple[str, ...]) -> dict[str, int] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.readlines()
    except OSError:
        return None
    out = {}
    for line in lines:
        key, _, rest = line.partition(":")
        if key in names:
            out[key] = int(rest.split()[0]) // MIB  # kB -> MiB
    return out


def _name(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(a.decode("utf-8", "replace") for a in argv if a)
    return text if len(text) <= 100 else text[:97] + "..."


def sample(root: int, peaks: Peaks, start: float, log: TextIO | None) -> None:
    """One reading of the group below ``root`` into ``peaks``."""
    now = time.monotonic() - start
    rss_sum = pss_sum = 0
    parts = []
    for pid in descendants(root):
        rollup = _fields(f"/proc/{pid}/smaps_rollup", ("Rss", "Pss"))
        status = _fields(f"/proc/{pid}/status", ("VmHWM",))
        if not rollup or not status or "Rss" not in rollup:  # ended, or a kernel thread
            continue
        rss_sum += rollup["Rss"]
        pss_sum += rollup.get("Pss", 0)
        if status.get("VmHWM", 0) > peaks.hwm.get(pid, -1):
            peaks.hwm[pid] = status["VmHWM"]
            peaks.names[pid] = _name(pid)  # as it is now (a launcher may have become what it started)
        parts.append(f"{pid}:{rollup['Rss']}/{rollup.get('Pss', 0)}")
    peaks.samples += 1
    if rss_sum > peaks.rss_sum:
        peaks.rss_sum, peaks.rss_sum_at = rss_sum, now
    if pss_sum > peaks.pss_sum:
        peaks.pss_sum, peaks.pss_sum_at = pss_sum, now
    if log is not None:
        log.write(f"{now:.1f} " + " ".join(parts) + "\n")


def report(peaks: Peaks, seconds: float, interval: float) -> str:
    lines = [f"peak memory of the command and its processes ({peaks.samples} samples every {interval:g} s over "
             f"{seconds:.0f} s)",
             "",
             "| measure | MiB | at second |",
             "|---|---:|---:|",
             f"| RSS summed over the processes (largest sample) | {peaks.rss_sum:,} | {peaks.rss_sum_at:.0f} |",
             f"| Pss summed over the processes (largest sample) | {peaks.pss_sum:,} | {peaks.pss_sum_at:.0f} |",
             "",
             "| process | peak RSS (VmHWM), MiB | command |",
             "|---|---:|---|"]
    for pid, hwm in sorted(peaks.hwm.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {pid} | {hwm:,} | `{peaks.names.get(pid, '?')}` |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     usage="%(prog)s [--interval S] [--log FILE] -- COMMAND [ARGS...]")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples (default 1)")
    parser.add_argument("--log", type=Path, default=None, help="write every sample to this file")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to measure, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to measure after --")
    if not args.interval > 0:
        parser.error(f"--interval must be a positive number of seconds, got {args.interval}")
    if not Path("/proc/self/smaps_rollup").exists():
        print("peak_memory: needs Linux's /proc/PID/smaps_rollup", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        try:  # opened before the command starts: an unwritable path must not cost a whole run's measurement
            log = stack.enter_context(args.log.open("w", encoding="utf-8", buffering=1)) if args.log else None
        except OSError as exc:
            print(f"peak_memory: --log {str(args.log)[:200]!r}: {exc.strerror}", file=sys.stderr)
            return 2
        return _measure(command, args.interval, log)


def _measure(command: list[str], interval: float, log: TextIO | None) -> int:
    """Run ``command``, sampling its process tree every ``interval`` seconds; its exit code."""
    start = time.monotonic()
    try:
        proc = subprocess.Popen(command)
    except OSError as exc:
        print(f"peak_memory: cannot start {command[0][:200]!r}: {exc.strerror}", file=sys.stderr)
        return 127
    for signum in (signal.SIGINT, signal.SIGTERM):  # pass them on; the command decides when to end
        signal.signal(signum, lambda s, _f: proc.send_signal(s))
    peaks = Peaks()
    while proc.poll() is None:
        sample(proc.pid, peaks, start, log)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(interval)
    seconds = time.monotonic() - start
    print(report(peaks, seconds, interval), file=sys.stderr)
    return proc.returncode if proc.returncode >= 0 else 128 - proc.returncode


if __name__ == "__main__":
    sys.exit(main())
