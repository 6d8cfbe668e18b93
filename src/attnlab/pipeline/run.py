"""Train one run of any task from a :class:`RunConfig` (fresh or resumed) and score it on its test split."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnlab.core.errors import ConfigError
from attnlab.core.run_config import RunConfig
from attnlab.pipeline.init import init_checkpoint, initialize_from
from attnlab.pipeline.load import load_predictor, predictor_from_checkpoint, resolve_checkpoint
from attnlab.tasks import TestReport, get_task
from attnlab.train.checkpoint import load_checkpoint, write_json_atomic
from attnlab.train.distributed import setup
from attnlab.train.trainer import Trainer, TrainResult, check_fresh_run_dir

log = logging.getLogger(__name__)

TEST_RESULTS = "test_results.json"


@dataclass
class RunResult:
    """What :func:`train_run` returns: the trainer's result, the data and the trained model (last state)."""

    train: TrainResult
    data: Any
    model: nn.Module
    config: RunConfig
    seconds: float
    test: list[TestReport] = field(default_factory=list)
    is_main: bool = True  # False on the ranks of a torchrun group other than 0 (they neither write nor score)


def _sections(cfg: RunConfig) -> dict[str, Any]:
    d = cfg.to_dict()
    d.pop("train")  # the trainer stores its own section
    return d


def _check_resumable(cfg: RunConfig, saved: dict[str, Any], out_dir: Path) -> None:
    current = _sections(cfg)
    changed = [k for k in ("data", "model") if saved.get(k) != current[k]]
    if (saved.get("task") or cfg.task_name) != cfg.task_name:
        changed.append("task")
    if changed:
        raise ConfigError(f"{out_dir} was trained with different {' and '.join(changed)} options; resume with the "
                          f"same config (see {out_dir / 'config.json'}) or train into a new --out directory")


def train_run(cfg: RunConfig, out_dir: str | Path, *, resume: bool = False, progress: bool | None = None) -> RunResult:
    """Prepare data, build the model and train it into ``out_dir`` (``last/``, ``best/``, metrics, config).

    With ``resume``, the text pipeline (tokenizers, vocabularies, labels) comes from ``out_dir/last`` (so ids
    cannot shift) and the task/data/model options must equal the saved ones; training options may change
    (e.g. a larger max_steps).

    Under torchrun (``WORLD_SIZE`` > 1) every process calls this: rank 0 prepares the data first and hands its
    tokenizers and vocabularies to the others, so all ranks encode alike (see :mod:`attnlab.train.distributed`).
    """
    out_dir = Path(out_dir)
    start = time.perf_counter()
    dist, device = setup(cfg.train.device)
    task = get_task(cfg.task_name)
    saved = None
    if not resume:  # refuse before spending minutes on data preparation
        check_fresh_run_dir(out_dir)
    else:
        ckpt = load_checkpoint(out_dir / "last")
        _check_resumable(cfg, ckpt.config, out_dir)
        saved = ckpt.extra
    if dist.enabled and saved is None:  # one fitted text pipeline for the whole group: rank 0's
        data = task.prepare(cfg, None, where=str(out_dir / "last")) if dist.is_main else None
        saved = dist.broadcast_json(data.extra_state() if dist.is_main else None)
        if not dist.is_main:
            data = task.prepare(cfg, saved, where="rank 0's data preparation")
    else:
        data = task.prepare(cfg, saved, where=str(out_dir / "last"))
    # torch seeds its default generator randomly per process: seed the initialization from the run's seed
    # (on a forked RNG, so global state is untouched) or the same --seed would give different runs.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        model = task.build_model(cfg, data)
    if not resume and cfg.train.init_from is not None:
        initialize_from(model, init_checkpoint(cfg), cfg.train.init_modules)
    params = sum(p.numel() for p in model.parameters())
    log.info("model: %s, %.2fM parameters", cfg.model.kind, params / 1e6)
    trainer = Trainer(model, cfg.train, task.train_batches(data, cfg), out_dir, evaluate=task.evaluator(data, cfg),
                      run_config=_sections(cfg), extra_state=data.extra_state(), progress=progress,
                      loss=task.loss(cfg), device=device, dist=dist)
    result = trainer.fit(resume=resume)
    return RunResult(result, data, model, cfg, time.perf_counter() - start, is_main=dist.is_main)


def score_test(run: RunResult, *, beams: Sequence[int] = (1,), write: bool = True) -> list[TestReport]:
    """Score the run's selected checkpoint (``best/``, else ``last/``) on its test split and, with ``write``, save
    every setting's metrics to ``OUT/test_results.json``. Text-to-text tasks decode with each beam size in
    ``beams``; every task adds its baseline where it has one (trained and chosen on the run's own splits)."""
    if not run.data.test:
        return []
    out_dir = run.train.out_dir
    predictor = load_predictor(resolve_checkpoint(out_dir))
    task = get_task(run.config.task_name)
    reports = task.score(predictor, run.data.test, predictor.config, beams=beams, baseline_data=run.data)
    if write:
        payload = {r.name: r.metrics for r in reports}
        payload["checkpoint"] = {"path": str(predictor.path), "step": predictor.step}
        write_json_atomic(out_dir / TEST_RESULTS, json.loads(json.dumps(payload)))
    run.test = reports
    return reports


def score_checkpoint(path: str | Path, *, beams: Sequence[int] = (1,), baseline: bool = False,
                     split: str = "test", length_penalty: float | None = None) -> tuple[Any, list[TestReport]]:
    """Score a checkpoint on a split (``"test"`` or ``"valid"``) of the data it was trained on.

    The data is read again with the run's own data options and the checkpoint's text pipeline (so the split is
    the same one). ``baseline`` also fits and scores the task's baseline on that run's training split;
    ``length_penalty`` replaces the run's ``decode.length_penalty`` for beam search. Returns
    ``(predictor, reports)``.
    """
    if split not in ("test", "valid"):
        raise ConfigError(f"split must be 'test' or 'valid', got {str(split)[:40]!r}")
    ckpt = load_checkpoint(resolve_checkpoint(path))
    predictor = predictor_from_checkpoint(ckpt)
    if length_penalty is not None:
        predictor.config = predictor.config.replace("decode", length_penalty=length_penalty)
    cfg = predictor.config
    task = get_task(cfg.task_name)
    data = task.prepare(cfg, ckpt.extra, where=str(ckpt.path))
    examples = data.test if split == "test" else data.valid
    if not examples:
        raise ConfigError(f"the data of {predictor.path} has no {split} split; score files with --src/--ref instead")
    return predictor, task.score(predictor, examples, cfg, beams=beams, baseline_data=data if baseline else None)
