"""``attnlab train``: train a model of any task on a synthetic dataset or a corpus, then score its test split."""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import TYPE_CHECKING

from attnlab.cli._run_options import add_run_options, config_help, run_config_from_args, saved_run_config

if TYPE_CHECKING:
    from attnlab.core.run_config import RunConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model of any task: translation, classification, summarization, images",
                       description="Train a model and write OUT/last (latest checkpoint), OUT/best, OUT/config.json "
                                   "and OUT/metrics.jsonl. Ctrl-C saves OUT/last; --resume continues it.",
                       epilog=config_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_options(p)
    p.add_argument("--out", required=True, metavar="DIR", help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in OUT from OUT/last")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--test-beam", type=int, default=None, metavar="N",
                   help="after training, also score the test split with beam size N (text-to-text tasks); "
                        "decode.tune_length_penalty chooses its length penalty on validation first")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from attnlab.pipeline.tune import check_tuning
    from attnlab.train.allocator import cap_kernel_caches, keep_freed_memory
    from attnlab.train.launch import ignored_processes, local_group, under_launcher
    from attnlab.train.trainer import check_fresh_run_dir

    keep_freed_memory()
    cap_kernel_caches()
    saved = saved_run_config(args.out) if args.resume else None
    cfg = run_config_from_args(args, saved=saved)
    tune_beam = check_tuning(cfg, args.test_beam)  # refuse before training, not after
    group: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if cfg.train.processes > 1 and not under_launcher():  # this process becomes rank 0 and starts the others
        if not args.resume:
            check_fresh_run_dir(args.out)
        group = local_group(cfg.train.processes, cfg.to_dict(), args.out, resume=args.resume)
    note = ignored_processes(cfg.train.processes)
    if note:
        print(note, file=sys.stderr)
    with group:
        return _train_and_score(cfg, args, tune_beam)


def _train_and_score(cfg: RunConfig, args: argparse.Namespace, tune_beam: int | None) -> int:
    from attnlab.pipeline import score_test, train_run
    from attnlab.pipeline.tune import tune_length_penalty
    from attnlab.train.distributed import teardown

    try:
        result = train_run(cfg, args.out, resume=args.resume, progress=False if args.no_progress else None)
    finally:
        teardown()
    if not result.is_main:  # under torchrun rank 0 reports and scores the test split
        return 0
    tr = result.train
    print(f"trained {tr.step} steps in {result.seconds:.0f}s ({tr.stop_reason}); final train loss {tr.final_loss:.3f}")
    if tr.best_value is not None:
        print(f"best {cfg.train.best_metric} = {tr.best_value:.4f} at step {tr.best_step} -> {tr.out_dir / 'best'}")
    choice = tune_length_penalty(result, beam_size=tune_beam)
    if choice is not None:
        print(choice.line)
    beams = [1] + ([args.test_beam] if args.test_beam and args.test_beam > 1 else [])
    for report in score_test(result, beams=beams):
        print(report.line)
    return 0
