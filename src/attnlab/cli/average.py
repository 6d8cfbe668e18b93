"""``attnlab average``: average the weights of several checkpoints of one run into a new checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from attnlab.core.errors import CheckpointError, ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("average", help="average the weights of checkpoints of one run (checkpoint averaging)",
                       description="Write a checkpoint whose weights are the element-wise mean of the given "
                                   "checkpoints' weights. Give checkpoint directories, or one run directory "
                                   "trained with train.keep_snapshots to average its kept snapshots.")
    p.add_argument("sources", nargs="+", type=Path, metavar="DIR",
                   help="checkpoint directories of one run, or a run directory with snapshots/")
    p.add_argument("--last", type=int, default=None, metavar="N",
                   help="with a run directory: average its newest N snapshots (default: all it kept)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="new checkpoint directory to write")
    p.set_defaults(func=run)


def _sources(args: argparse.Namespace) -> list[Path]:
    from attnlab.train.trainer import SNAPSHOTS_DIR, list_snapshots

    if args.last is not None and args.last < 2:
        raise ConfigError(f"--last must be at least 2 (averaging one checkpoint changes nothing), got {args.last}")
    if len(args.sources) == 1 and not (args.sources[0] / "meta.json").exists():
        run_dir = args.sources[0]
        snapshots = list_snapshots(run_dir / SNAPSHOTS_DIR)
        if not snapshots:
            raise CheckpointError(f"{run_dir}: neither a checkpoint nor a run directory with snapshots; train with "
                                  f"--set train.keep_snapshots=5 to keep checkpoints to average, or list "
                                  f"checkpoint directories")
        return snapshots[-args.last:] if args.last is not None else snapshots
    if args.last is not None:
        raise ConfigError("--last selects snapshots of one run directory; with checkpoint directories, list the "
                          "ones to average")
    return list(args.sources)


def run(args: argparse.Namespace) -> int:
    from attnlab.pipeline import average_checkpoints

    steps = average_checkpoints(_sources(args), args.out)  # no second read of what was just written
    print(f"averaged {len(steps)} checkpoints (steps {', '.join(map(str, steps))}) -> {args.out}")
    return 0
