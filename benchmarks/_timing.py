"""Timing helpers shared by the benchmark scripts: warm-up, interleaved repeats, median."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import torch


def environment() -> str:
    cpu = platform.processor() or platform.machine()
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu}, python {platform.python_version()}"


def median_times(fns: dict[str, Callable[[], object]], *, warmup: int = 3, repeats: int = 15,
                 min_seconds: float = 0.0) -> dict[str, float]:
    """Median seconds per call of each function, measured interleaved so that machine noise hits every candidate
    alike. The order alternates from round to round (A B, B A, A B, ...): a candidate that always ran right after
    another would always inherit its state (freed memory to map again, caches it evicted)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    n = 0
    order = list(fns.items())
    while n < repeats or time.perf_counter() - start < min_seconds:
        for name, fn in order if n % 2 == 0 else reversed(order):
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
        n += 1
    return {name: statistics.median(s) for name, s in samples.items()}
