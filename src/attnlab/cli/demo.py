"""``attnlab demo``: the main job on the embedded default -- learn to normalize dates, then show where it looks.

Trains a GRU encoder-decoder with Bahdanau (additive) attention on synthetic dates ("Nov 21, 2026" ->
"2026-11-21"), reports exact-match accuracy on held-out dates, prints some translations and writes their
attention heatmaps (PNG) and one interactive viewer (HTML) holding all of them to the output directory.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from attnlab.cli._run_options import SEED_MAX, int_in

EXAMPLES = ["21 November 2026", "Nov 21, 2026", "saturday 21 nov 2026", "21/11/26", "Monday, March 3, 1975",
            "1 JAN 2000"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train a Bahdanau-attention model on dates and draw its attention (about a minute)",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("--out", default="runs/demo", metavar="DIR",
                   help="run directory; a finished demo there is reused, an unfinished one resumed (default runs/demo)")
    p.add_argument("--max-steps", type=int, default=None, help="training steps (default: the demo recipe's)")
    p.add_argument("--seed", type=int_in(0, SEED_MAX), default=None, help="training seed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def demo_config(max_steps: int | None = None, seed: int | None = None):
    """The demo recipe: the ``dates`` task defaults of ``attnlab train --task dates --model seq2seq``."""
    from attnlab.core.run_config import RunConfig, merge_dicts
    from attnlab.tasks import get_task

    train = {k: v for k, v in (("max_steps", max_steps), ("seed", seed)) if v is not None}
    defaults = get_task("translation").defaults("seq2seq", synthetic=True)
    return RunConfig.from_dict(merge_dicts(defaults, {"data": {"source": "task", "task": "dates"}, "train": train}))


def run(args: argparse.Namespace) -> int:
    from attnlab.models.base import AttentionMaps
    from attnlab.pipeline import load_translator, score_pairs, train_run
    from attnlab.train.allocator import cap_kernel_caches, keep_freed_memory
    from attnlab.viz.heatmap import plot_attention
    from attnlab.viz.html import write_html
    from attnlab.viz.views import Example

    keep_freed_memory()
    cap_kernel_caches()
    out = Path(args.out)
    cfg = demo_config(args.max_steps, args.seed)
    resume = (out / "last").exists()
    print("attnlab demo: teach a GRU encoder-decoder with Bahdanau attention to normalize dates")
    print(f"  e.g. {EXAMPLES[1]!r} -> '2026-11-21'; character-level; output in {out}/")
    if resume:
        print(f"  {out}/last exists: continuing that run (delete {out} to start over)")
    start = time.perf_counter()
    result = train_run(cfg, out, resume=resume, progress=False if args.no_progress else None)
    data = result.data
    size = f"{len(data.train)} training dates, {sum(p.numel() for p in result.model.parameters()):,} parameters"
    if math.isnan(result.train.final_loss):  # no step ran in this call
        print(f"\nreusing the trained demo in {out} (step {result.train.step}; {size})")
    else:
        print(f"\ntrained {result.train.step} steps in {time.perf_counter() - start:.0f}s ({size})")

    translator = load_translator(out / "best" if (out / "best").exists() else out / "last")
    metrics, hyps = score_pairs(translator.model, translator.text, data.test, cfg, beam_size=1)
    print(f"held-out accuracy (exact match, {len(data.test)} dates never seen in training): "
          f"{100 * metrics['exact_match']:.1f}%")
    wrong = [(s, h, t) for (s, t), h in zip(data.test, hyps, strict=True) if h != t]
    for s, h, t in wrong[:3]:
        print(f"  miss: {s!r} -> {h!r} (expected {t!r})")

    print("\ntranslations and where the model looked:")
    results = translator.translate(EXAMPLES, return_attention=True)
    examples = []
    for i, tr in enumerate(results, start=1):
        rows = tr.tokens + (["<eos>"] if tr.best is not None and tr.best.ended else [])
        cross = AttentionMaps(cross=tr.best.cross_attention[None, None, None])  # (L=1, B=1, H=1, Tt, Ts)
        plot_attention(cross, rows, tr.src_tokens, out / f"attention-{i}.png", title=f"{tr.source!r} -> {tr.text!r}")
        print(f"  {tr.source:<24} -> {tr.text:<12} {out / f'attention-{i}.png'}")
        examples.append(Example(cross, rows, tr.src_tokens, name=tr.source, prediction=tr.text))
    write_html(examples, out / "attention.html", title="attnlab demo: dates, where the model looked")
    print(f"\ninteractive viewer: {out / 'attention.html'} (all {len(examples)} translations)")
    print(f"translate more: attnlab translate --checkpoint {out}/best  (one date per line on stdin)")
    return 0
