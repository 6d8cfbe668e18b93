"""Training progress: a tqdm bar on stderr, a throughput meter and the JSONL metrics log."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

__all__ = ["MetricsLog", "ProgressBar", "Throughput"]


class ProgressBar:
    """A tqdm bar over optimizer steps showing loss, tokens/s, learning rate and (tqdm's) ETA.

    ``enabled=None`` shows it only when stderr is a terminal.
    """

    def __init__(self, total: int, *, initial: int = 0, enabled: bool | None = True, desc: str = "train") -> None:
        disable = (not sys.stderr.isatty()) if enabled is None else not enabled
        self.enabled = not disable
        self._bar = tqdm(total=total, initial=initial, desc=desc, unit="step", file=sys.stderr, disable=disable,
                         dynamic_ncols=True, mininterval=0.25)

    def update(self, step: int, *, loss: float, tokens_per_s: float, lr: float) -> None:
        """Move the bar to ``step`` and refresh its postfix."""
        self._bar.set_postfix({"loss": f"{loss:.4f}", "tok/s": f"{tokens_per_s:,.0f}", "lr": f"{lr:.2e}"},
                              refresh=False)
        self._bar.update(step - self._bar.n)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Throughput:
    """Tokens per second over the interval since the last :meth:`rate` call."""

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._tokens = 0

    def add(self, tokens: int) -> None:
        self._tokens += tokens

    def rate(self) -> float:
        """Tokens/s since the previous call (or construction), then start a new interval."""
        now = time.perf_counter()
        elapsed = now - self._start
        rate = self._tokens / elapsed if elapsed > 0 else math.inf
        self._start, self._tokens = now, 0
        return rate


class MetricsLog:
    """Append-only JSON-lines log of training and evaluation records, each with a ``step``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def write(self, record: dict[str, Any]) -> None:
        """Append one record as a JSON line (flushed, so a crash loses at most the line being written)."""
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=False) + "\n")
            fh.flush()

    def read(self) -> list[dict[str, Any]]:
        """All complete records (a torn last line from a crash is skipped)."""
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def truncate_after(self, step: int) -> None:
        """Drop records logged after ``step`` (they are redone when training resumes from ``step``)."""
        if not self.path.exists():
            return
        kept = [r for r in self.read() if isinstance(r.get("step"), int) and r["step"] <= step]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, self.path)
