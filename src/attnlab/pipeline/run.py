"""Train one run from a :class:`RunConfig` (fresh or resumed) and score it on the held-out test pairs."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from attnlab.core.errors import ConfigError
from attnlab.core.run_config import RunConfig
from attnlab.data.batching import BucketedBatches
from attnlab.data.prepare import PreparedData, prepare_data, restore_text_pipeline
from attnlab.models.base import EncoderDecoder
from attnlab.models.build import build_model
from attnlab.pipeline.validate import make_evaluator
from attnlab.train.checkpoint import load_checkpoint
from attnlab.train.trainer import Trainer, TrainResult, check_fresh_run_dir

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What :func:`train_run` returns: the trainer's result, the data and the trained model (last state)."""

    train: TrainResult
    data: PreparedData
    model: EncoderDecoder
    config: RunConfig
    seconds: float


def _sections(cfg: RunConfig) -> dict[str, Any]:
    d = cfg.to_dict()
    d.pop("train")  # the trainer stores its own section
    return d


def _check_resumable(cfg: RunConfig, saved: dict[str, Any], out_dir: Path) -> None:
    current = _sections(cfg)
    changed = [k for k in ("data", "model") if saved.get(k) != current[k]]
    if changed:
        raise ConfigError(f"{out_dir} was trained with different {' and '.join(changed)} options; resume with the "
                          f"same config (see {out_dir / 'config.json'}) or train into a new --out directory")


def train_run(cfg: RunConfig, out_dir: str | Path, *, resume: bool = False, progress: bool | None = None) -> RunResult:
    """Prepare data, build the model and train it into ``out_dir`` (``last/``, ``best/``, metrics, config).

    With ``resume``, tokenizers and vocabularies come from ``out_dir/last`` (so ids cannot shift) and the
    data/model options must equal the saved ones; training options may change (e.g. a larger max_steps).
    """
    out_dir = Path(out_dir)
    start = time.perf_counter()
    text = None
    if not resume:  # refuse before spending minutes on data preparation
        check_fresh_run_dir(out_dir)
    if resume:
        ckpt = load_checkpoint(out_dir / "last")
        _check_resumable(cfg, ckpt.config, out_dir)
        text = restore_text_pipeline(ckpt.extra, str(ckpt.path))
    data = prepare_data(cfg.data, text)
    # torch seeds its default generator randomly per process: seed the initialization from the run's seed
    # (on a forked RNG, so global state is untouched) or the same --seed would give different runs.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        model = build_model(cfg.model, len(data.text.src_vocab), len(data.text.tgt_vocab))
    params = sum(p.numel() for p in model.parameters())
    log.info("model: %s, %.2fM parameters", cfg.model.kind, params / 1e6)
    batches = BucketedBatches(data.train_examples, cfg.train.tokens_per_batch, seed=cfg.train.seed)
    trainer = Trainer(model, cfg.train, batches, out_dir, evaluate=make_evaluator(data, cfg),
                      run_config=_sections(cfg), extra_state=data.text.to_dict(), progress=progress)
    result = trainer.fit(resume=resume)
    return RunResult(result, data, model, cfg, time.perf_counter() - start)
