"""The decoder's matrix products through oneDNN (weight packed once) against PyTorch's default (MKL) path.

Run: .venv/bin/python benchmarks/onednn_linear.py [--threads 1] [--vocab 7795] [--repeats 1500]

fp32 inference, ``F.linear(x, w, b)`` against ``torch.ops.mkldnn._linear_pointwise(x, packed_w, b, ...)`` with
``packed_w = torch.ops.mkldnn._reorder_linear_weight(w, None)`` made once, at the shapes of Transformer-tiny's
decoding steps: the output projection (rows = live hypotheses: greedy batches of 16-128, beam 5 x 64 = 320) and the
layers' own products (d_model 128, FFN 256, fused QKV 384). Each pair alternates call by call (A B, B A, ...,
``benchmarks/_timing.median_times``), ``--repeats`` calls each; medians. The ratio is MKL's time over oneDNN's
(above 1: oneDNN is faster), and the largest difference between the two results is printed beside it.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import environment, median_times  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--vocab", type=int, default=7795, help="output vocabulary (the En-De recipe's: 7,795)")
    parser.add_argument("--repeats", type=int, default=1500, help="calls of each path, alternating (A B, B A, ...)")
    args = parser.parse_args()
    for name in ("threads", "vocab", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be a positive integer, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)
    shapes = [(16, 128, args.vocab), (32, 128, args.vocab), (64, 128, args.vocab), (128, 128, args.vocab),
              (320, 128, args.vocab), (64, 128, 384), (320, 128, 384), (64, 128, 256), (64, 256, 128),
              (64, 128, 128), (320, 128, 128)]
    print(environment())
    print("| rows x in x out | MKL µs | oneDNN µs | MKL / oneDNN | max abs difference |")
    print("|---|---:|---:|---:|---:|")
    with torch.inference_mode():
        for rows, k, n in shapes:
            x, w, b = torch.randn(rows, k), torch.randn(n, k), torch.randn(n)
            packed = torch.ops.mkldnn._reorder_linear_weight(w, None)
            plain = functools.partial(F.linear, x, w, b)
            onednn = functools.partial(torch.ops.mkldnn._linear_pointwise, x, packed, b, "none", [], "")
            times = median_times({"mkl": plain, "onednn": onednn}, warmup=5, repeats=args.repeats)
            t_mkl, t_dnn = times["mkl"] * 1e6, times["onednn"] * 1e6
            diff = (onednn() - plain()).abs().max().item()
            print(f"| {rows} x {k} x {n} | {t_mkl:,.1f} | {t_dnn:,.1f} | {t_mkl / t_dnn:.2f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
