"""Data-parallel training throughput: torchrun with N ranks x T1 threads against one process with T2 threads.

Run: .venv/bin/python benchmarks/ddp.py [--ranks 2] [--rank-threads 1] [--threads 2] [--steps 120] [--rounds 2]
     [--model transformer] [--task reverse]

Both sides run the same ``attnlab train`` command on the same synthetic task and config (a Transformer-tiny
sized model on ``--task``; the global batch is ``train.tokens_per_batch`` in both, as under DDP each rank
trains on its share of every batch), for ``--steps`` steps, ``--rounds`` times alternating (this machine is
shared: alternation spreads its noise over both). Measured: target tokens per second of the steps after the
first ``log_every`` window, from ``metrics.jsonl`` (rank 0 logs the global count), and the wall time of each
command including start-up. Printed: a table per round and the ratio ``DDP tok/s / one-process tok/s``
(> 1: data parallel is faster).

On a 2-core machine two ranks with one thread each compete with the same two cores that one process with two
threads uses, and add a gradient all-reduce per step: expect a ratio near or below 1. DDP is for more cores,
machines or GPUs than one process can use; here it shows correctness (tests/train/test_distributed.py), not
speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL_ARGS = ["--set", "model.d_model=128", "--set", "model.num_heads=4", "--set", "model.ffn_dim=512",
              "--set", "model.encoder_layers=3", "--set", "model.decoder_layers=3"]


def _train_argv(args: argparse.Namespace, out: Path, threads: int) -> list[str]:
    return ["train", "--task", args.task, "--model", args.model, *MODEL_ARGS, "--max-steps", str(args.steps),
            "--set", f"train.num_threads={threads}", "--set", "train.tokens_per_batch=4096",
            "--set", "train.log_every=10", "--set", f"train.eval_every={args.steps}",
            "--set", f"train.save_every={args.steps}", "--set", "data.num_train=20000", "--set", "data.num_valid=50",
            "--set", "data.num_test=0", "--set", "decode.eval_sentences=10", "--no-progress", "--out", str(out)]


def _tokens_per_s(out: Path) -> float:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    train = [r for r in records if r["kind"] == "train"][1:]  # the first window includes start-up
    tokens = sum(r["tokens"] for r in train)
    seconds = train[-1]["elapsed_s"] - [r for r in records if r["kind"] == "train"][0]["elapsed_s"]
    return tokens / seconds


def _run(cmd: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MASTER_ADDR": "127.0.0.1"}
    start = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if res.returncode != 0:
        sys.exit(f"benchmark command failed (exit {res.returncode}): {' '.join(cmd[:8])} ...\n{res.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--rank-threads", type=int, default=1, help="torch threads per rank")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the single process")
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--task", default="reverse")
    p.add_argument("--model", default="transformer")
    args = p.parse_args()
    rows: list[tuple[int, str, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = ["one", "ddp"] if r % 2 == 0 else ["ddp", "one"]
            for side in order:
                out = Path(tmp) / f"{side}-{r}"
                if side == "one":
                    cmd = [sys.executable, "-m", "attnlab", *_train_argv(args, out, args.threads)]
                    wall = _run(cmd, args.threads)
                    label = f"1 process x {args.threads} threads"
                else:
                    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc-per-node={args.ranks}", "--rdzv-endpoint=127.0.0.1:0", "-m", "attnlab",
                           *_train_argv(args, out, args.rank_threads)]
                    wall = _run(cmd, args.rank_threads)
                    label = f"{args.ranks} ranks x {args.rank_threads} thread(s)"
                rows.append((r, label, _tokens_per_s(out), wall))
    print(f"| round | setting | target tok/s | wall s ({args.steps} steps, start-up included) |")
    print("|---:|---|---:|---:|")
    for r, label, rate, wall in rows:
        print(f"| {r + 1} | {label} | {rate:,.0f} | {wall:.1f} |")
    one = statistics.median(rate for _, label, rate, _ in rows if label.startswith("1 process"))
    ddp = statistics.median(rate for _, label, rate, _ in rows if not label.startswith("1 process"))
    print(f"\nmedian tok/s: one process {one:,.0f}, DDP {ddp:,.0f}; ratio DDP / one process = {ddp / one:.2f}")


if __name__ == "__main__":
    main()
