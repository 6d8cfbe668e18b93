"""attnlab MultiHeadAttention vs torch.nn.MultiheadAttention: median forward and forward+backward times.

Run: .venv/bin/python benchmarks/attention.py [--threads 2] [--repeats 15] [--keep-freed-memory] [--quick]

Both modules share the same weights; inputs are batch-first fp32. "fast" = need_weights=False; "weights" =
per-head weights returned (nn: need_weights=True, average_attn_weights=False). Forward is timed in eval
mode under no_grad (where nn.MultiheadAttention may take its native fused path); forward+backward in
train mode with dropout 0. Ratios < 1 mean attnlab is faster. It then times attnlab's fast path with SDPA against
the plain matmul path at short sequences, and measures the peak memory of one 8192-token self-attention on
attnlab's fast path against SDPA alone, each in a fresh subprocess.

With glibc's default settings, large freed buffers go back to the kernel (or not) depending on the heap's
recent history, and every buffer mapped afresh is page-faulted in again: on this VM that moves single timings
by 10-30% and ratios between runs by several percent, though both candidates run in one process.
``--keep-freed-memory`` times under the setting ``attnlab train`` uses (glibc ``mallopt``: no per-buffer
``mmap``, no trimming; :func:`attnlab.train.allocator.keep_freed_memory`), which leaves the arithmetic and
memory traffic of each candidate to compare. The memory measurement always runs in fresh processes with its
own settings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import environment, median_times  # noqa: E402

from attnlab.attention import MultiHeadAttention  # noqa: E402
from attnlab.attention.multihead import DEFAULT_POLICY  # noqa: E402
from attnlab.train.allocator import keep_freed_memory  # noqa: E402

SHAPES = [(64, 32, 512, 8), (16, 128, 512, 8), (4, 512, 512, 8), (1, 2048, 512, 8)]


def _fwd(module: nn.Module, x: torch.Tensor, ours: bool, weights: bool):
    def run():
        with torch.no_grad():
            if ours:
                return module(x, need_weights=weights)
            return module(x, x, x, need_weights=weights, average_attn_weights=False)
    return run


def _fwd_bwd(module: nn.Module, x: torch.Tensor, ours: bool, weights: bool):
    def run():
        if ours:
            out = module(x, need_weights=weights)
        else:
            out = module(x, x, x, need_weights=weights, average_attn_weights=False)
        loss = out[0].sum() + (out[1].sum() if weights else 0.0)
        loss.backward()
    return run


def time_shapes(repeats: int, shapes: list[tuple[int, int, int, int]]) -> list[dict]:
    rows = []
    for batch, seq, d_model, heads in shapes:
        torch.manual_seed(0)
        ours = MultiHeadAttention(d_model, heads)
        ref = ours.to_torch(batch_first=True)
        x = torch.randn(batch, seq, d_model)
        xg = x.clone().requires_grad_(True)
        for path, weights in (("fast", False), ("weights", True)):
            for mode in ("forward", "forward+backward"):
                train = mode != "forward"
                ours.train(train)
                ref.train(train)
                make = _fwd_bwd if train else _fwd
                inp = xg if train else x
                t = median_times({"attnlab": make(ours, inp, True, weights), "torch": make(ref, inp, False, weights)},
                                 repeats=repeats)
                rows.append({"shape": f"({batch}, {seq}, {d_model}, {heads})", "path": path, "mode": mode,
                             "attnlab_ms": 1e3 * t["attnlab"], "torch_ms": 1e3 * t["torch"],
                             "ratio": t["attnlab"] / t["torch"]})
    return rows


def _kernel_call(module: MultiHeadAttention, x: torch.Tensor, lens: torch.Tensor | None, threshold: int,
                 train: bool):
    # Multi-query score matrices up to this size take the plain matmul path.
    policy = replace(DEFAULT_POLICY, small_scores=threshold)

    def run():
        module.policy = policy
        module.train(train)
        if train:
            module(x, valid_lens=lens).output.sum().backward()
        else:
            with torch.no_grad():
                module(x, valid_lens=lens)
    return run


KERNEL_SHAPES = [(256, 8), (128, 16), (64, 32), (32, 64), (16, 128)]  # (batch, seq): 2,048 tokens each
KERNEL_SIZES = [(512, 8), (128, 4)]  # (d_model, heads): the benchmark's and Transformer-tiny's


def time_kernels(repeats: int, shapes: list[tuple[int, int]], sizes: list[tuple[int, int]]) -> list[dict]:
    """attnlab's fast path with SDPA against the plain matmul path, which the module takes for multi-query score
    matrices up to ``PathPolicy.small_scores`` entries: the measurement behind that threshold. Each shape runs
    unmasked and with random padding (``valid_lens`` drawn from 1..seq, as in bucketed training batches)."""
    rows = []
    for d_model, heads in sizes:
        for batch, seq in shapes:
            torch.manual_seed(0)
            module = MultiHeadAttention(d_model, heads)
            x = torch.randn(batch, seq, d_model)
            xg = x.clone().requires_grad_(True)
            lens = torch.randint(1, seq + 1, (batch,))
            for mode, train in (("forward", False), ("forward+backward", True)):
                row = {"size": f"{d_model}, {heads}", "shape": f"({batch}, {seq})", "mode": mode}
                for padded in (False, True):
                    fns = {name: _kernel_call(module, xg if train else x, lens if padded else None, threshold, train)
                           for name, threshold in (("sdpa", 0), ("matmul", 10**9))}
                    t = median_times(fns, repeats=repeats)
                    key = "padded" if padded else "plain"
                    row[f"{key}_sdpa_ms"], row[f"{key}_matmul_ms"] = 1e3 * t["sdpa"], 1e3 * t["matmul"]
                    row[f"{key}_ratio"] = t["matmul"] / t["sdpa"]
                rows.append(row)
    return rows


_MEM_CHILD = r"""
import json, sys, torch
torch.set_num_threads(int(sys.argv[2]))
which, T, D, H = sys.argv[1], 8192, 512, 8
torch.manual_seed(0)
from attnlab.attention import MultiHeadAttention

def status(field):  # kB -> MiB, from the kernel's accounting of this process
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024

m = MultiHeadAttention(D, H).eval()
with torch.no_grad():  # warm the kernels on a small input so one-time allocations are not counted
    m(torch.randn(1, 256, D))
    torch.nn.functional.scaled_dot_product_attention(*torch.randn(3, 1, H, 256, D // H))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current resident size
base = status("VmRSS")
with torch.no_grad():
    if which == "attnlab":
        x = torch.randn(1, T, D)
        out = m(x)
    else:
        q, k, v = (torch.randn(1, H, T, D // H) for _ in range(3))
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
print(json.dumps({"peak_mib": status("VmHWM") - base}))
"""


def peak_memory(threads: int, mmap_threshold: int | None = None) -> dict[str, float]:
    """Peak resident memory above a warmed baseline (inputs included), MiB, each in a fresh process.

    With ``mmap_threshold`` (glibc's ``MALLOC_MMAP_THRESHOLD_``), large buffers are always mapped and returned to
    the system when freed, so the peak RSS tracks live tensors; by default glibc raises the threshold after the
    first large free and keeps later freed buffers in the heap, where they still count as resident.
    """
    env = dict(os.environ)
    if mmap_threshold is not None:
        env["MALLOC_MMAP_THRESHOLD_"] = str(mmap_threshold)
    out = {}
    for which in ("attnlab", "sdpa"):
        res = subprocess.run([sys.executable, "-c", _MEM_CHILD, which, str(threads)], capture_output=True, text=True,
                             check=True, env=env)
        out[which] = json.loads(res.stdout.strip().splitlines()[-1])["peak_mib"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="time with glibc keeping freed memory (as attnlab train does), not its default")
    parser.add_argument("--quick", action="store_true", help="first two shapes only, few repeats")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kept = keep_freed_memory() if args.keep_freed_memory else False
    shapes = SHAPES[:2] if args.quick else SHAPES
    print(f"# {environment()}, fp32, allocator: {'glibc keep-freed-memory' if kept else 'default'}")
    rows = time_shapes(3 if args.quick else args.repeats, shapes)
    print("| (batch, seq, d_model, heads) | path | mode | attnlab ms | torch ms | ratio |")
    print("|---|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['shape']} | {r['path']} | {r['mode']} | {r['attnlab_ms']:.2f} | {r['torch_ms']:.2f} | "
              f"{r['ratio']:.2f} |")
    worst = max(r["ratio"] for r in rows)
    print(f"\nworst ratio (attnlab / torch): {worst:.2f}")
    print("\nfast path kernels: SDPA against the plain matmul path (used for multi-query score matrices up to "
          f"{DEFAULT_POLICY.small_scores} entries); padded = random valid_lens")
    print("| (d_model, heads) | (batch, seq) | mode | SDPA ms | matmul ms | matmul / SDPA | padded: SDPA ms "
          "| padded: matmul ms | padded: matmul / SDPA |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    kernel_shapes = KERNEL_SHAPES[:2] if args.quick else KERNEL_SHAPES
    for r in time_kernels(3 if args.quick else args.repeats, kernel_shapes, KERNEL_SIZES):
        print(f"| ({r['size']}) | {r['shape']} | {r['mode']} | {r['plain_sdpa_ms']:.2f} | {r['plain_matmul_ms']:.2f} | "
              f"{r['plain_ratio']:.2f} | {r['padded_sdpa_ms']:.2f} | {r['padded_matmul_ms']:.2f} | "
              f"{r['padded_ratio']:.2f} |")
    if not args.quick:
        print("\npeak memory, one 8192-token self-attention (1 batch, 8 heads, head dim 64, no_grad), inputs included:")
        print("| allocator | attnlab fast path MiB | SDPA alone MiB | ratio |")
        print("|---|---:|---:|---:|")
        for label, threshold in (("MALLOC_MMAP_THRESHOLD_=65536 (live tensors)", 65536), ("glibc default", None)):
            mem = peak_memory(args.threads, threshold)
            print(f"| {label} | {mem['attnlab']:.1f} | {mem['sdpa']:.1f} | {mem['attnlab'] / mem['sdpa']:.2f} |")


if __name__ == "__main__":
    main()
