"""The small-score-matrix thresholds of MultiHeadAttention's fast path, end to end: decoding and training steps.

Run: .venv/bin/python benchmarks/kernel_threshold.py [--checkpoint runs/en-de/best] [--sentences 500]
     [--steps 40] [--size tiny|base] [--threads 2] [--repeats 3]

``PathPolicy.small_scores`` (``attnlab.attention.multihead``) sends score matrices of several queries and at most
that many entries to the plain matmul path instead of SDPA; ``PathPolicy.small_scores_one_query`` does the same for
one-query steps (KV-cached decoding). ``benchmarks/attention.py`` times the attention call alone; this script times
what the choices are for, each pair of settings alternating in one process (A B, B A, ...):

* decoding (needs ``--checkpoint``, a model trained by ``attnlab train``; its source language's
  ``test_2016_flickr`` file, first ``--sentences`` lines): greedy and beam 5 with one-query steps on the kernel
  (``small_scores_one_query = 0``, the default) against the plain path (``= small_scores``);
* training: trainer steps of ``benchmarks/train_throughput.py``'s Transformer (``--size``: tiny or base; bf16
  autocast, Multi30k En-De batches of 4,096 tokens built as there) with ``small_scores`` at its default against
  0 (SDPA for every multi-query matrix), with glibc keeping freed memory as ``attnlab train`` does.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_throughput  # noqa: E402
from _timing import environment, median_times  # noqa: E402

from attnlab.attention.multihead import DEFAULT_POLICY, MultiHeadAttention, PathPolicy  # noqa: E402
from attnlab.data.corpus import multi30k_path, read_lines  # noqa: E402
from attnlab.pipeline.load import load_translator  # noqa: E402
from attnlab.train.allocator import keep_freed_memory  # noqa: E402

DEFAULT = DEFAULT_POLICY.small_scores


def _policy_setter(model: nn.Module, policy: PathPolicy):
    """A function that gives every multi-head attention of ``model`` ``policy`` (cheap enough to call every step)."""
    modules = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]

    def apply() -> None:
        for module in modules:
            module.policy = policy
    return apply


def _step_model(step) -> nn.Module:
    """The model behind train_throughput's attnlab step (its closure holds the trainer)."""
    cells = (cell.cell_contents for cell in step.__closure__ or ())
    return next(c.model for c in cells if isinstance(getattr(c, "model", None), nn.Module))


def time_decoding(checkpoint: str, sentences: int, repeats: int) -> list[dict]:
    translator = load_translator(checkpoint)
    src_lang = translator.config.data.src_lang
    src = read_lines(multi30k_path("test_2016_flickr", src_lang))[:sentences]

    def call(one_query: int, beam: int):
        use_policy = _policy_setter(translator.model, replace(DEFAULT_POLICY, small_scores_one_query=one_query))

        def run():
            use_policy()
            with torch.no_grad():
                translator.translate(src, beam_size=beam)
        return run

    rows = []
    try:
        for beam in (1, 5):
            t = median_times({"kernel": call(0, beam), "plain": call(DEFAULT, beam)}, warmup=1, repeats=repeats)
            rows.append({"beam": beam, "kernel_s": t["kernel"], "plain_s": t["plain"],
                         "ratio": t["plain"] / t["kernel"]})
    finally:
        _policy_setter(translator.model, DEFAULT_POLICY)()
    return rows


def time_training(size: str, steps: int, warmup: int = 2) -> dict:
    batches, vocab, _ = train_throughput.load_batches(warmup + steps, 4096, 8000, seed=0)

    def with_threshold(step, threshold: int):
        use_policy = _policy_setter(_step_model(step), replace(DEFAULT_POLICY, small_scores=threshold))

        def run(batch):
            use_policy()
            step(batch)
        return run

    with tempfile.TemporaryDirectory() as tmp:
        cands = train_throughput.make_candidates(size, vocab, True, True, Path(tmp))
        # train_throughput's alternating timer, its two slots holding attnlab's step under the two settings
        pair = SimpleNamespace(attnlab=with_threshold(cands.attnlab, DEFAULT), torch=with_threshold(cands.attnlab, 0))
        times = train_throughput.time_steps(pair, batches, warmup)
    lengths = [b.tgt_out.shape[1] for b in batches[warmup:]]
    ratios = [a / b for a, b in zip(times["attnlab"], times["torch"], strict=True)]
    short = [r for r, n in zip(ratios, lengths, strict=True) if n * n <= DEFAULT]
    return {"steps": steps, "total_default": sum(times["attnlab"]), "total_sdpa": sum(times["torch"]),
            "median_ratio": statistics.median(ratios), "short": len(short),
            "short_ratio": statistics.median(short) if short else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="trained translation model for the decoding part (skipped without)")
    parser.add_argument("--sentences", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3, help="decoding rounds per setting")
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per setting (0: decoding only)")
    parser.add_argument("--size", default="tiny", choices=sorted(train_throughput.SIZES))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    print(f"# {environment()}; PathPolicy.small_scores = {DEFAULT}")
    if args.checkpoint:
        print(f"\ndecoding {args.sentences} test_2016_flickr sentences with {args.checkpoint}, batch 64")
        print("| beam | one-query steps on the kernel s | on the plain path s | plain / kernel |")
        print("|---:|---:|---:|---:|")
        for r in time_decoding(args.checkpoint, args.sentences, args.repeats):
            print(f"| {r['beam']} | {r['kernel_s']:.2f} | {r['plain_s']:.2f} | {r['ratio']:.3f} |")
    else:
        print("\ndecoding: skipped (no --checkpoint)")
    if args.steps <= 0:
        print("\ntraining: skipped (--steps 0)")
        return
    r = time_training(args.size, args.steps)
    print(f"\nTransformer ({args.size}) training steps, bf16 autocast, {r['steps']} batches each")
    print(f"| setting | total s | median step ratio vs SDPA | batches with target length <= {int(DEFAULT ** 0.5)} "
          "| their median ratio |")
    print("|---|---:|---:|---:|---:|")
    print(f"| SDPA for every multi-query matrix | {r['total_sdpa']:.2f} | 1.000 | | |")
    print(f"| small_scores = {DEFAULT} (default) | {r['total_default']:.2f} | {r['median_ratio']:.3f} | "
          f"{r['short']} | {r['short_ratio']:.3f} |")


if __name__ == "__main__":
    main()
