"""The training loop: AdamW training of any model on any task's loss, with exact resume.

The trainer knows nothing of the task: it asks a ``loss(model, batch) -> (loss_sum, count)`` callable for the
summed loss of a batch and what it is summed over (target tokens for teacher-forced text generation, examples
for classification), and minimizes ``loss_sum / count``. Without one it trains an encoder-decoder with
teacher forcing (:func:`attnlab.train.loss.teacher_forced_loss`).

One run lives in an output directory::

    OUT/config.json     the run configuration (``run_config`` plus ``"train"``: the TrainConfig)
    OUT/metrics.jsonl   one JSON record per logging step (``"kind": "train"``) and evaluation (``"eval"``)
    OUT/last/           the latest checkpoint (every ``save_every`` steps, at the end, on Ctrl-C/SIGTERM)
    OUT/best/           the checkpoint with the best ``best_metric`` so far
                        (with ``ema_decay``: its model weights are the averaged ones that were evaluated)
    OUT/snapshots/      with ``keep_snapshots: N``: the model weights of the last N saves of ``last``, one
                        inference-only checkpoint per step (``step-0004400``), for checkpoint averaging;
                        with ``average_snapshots`` their mean is evaluated at the end and becomes ``best``
                        if it beats it (an ``"average"`` record in metrics.jsonl says which)

Exact resume: a checkpoint holds everything the next step depends on -- parameters, AdamW moments, the
schedule step, the RNG states (dropout), the data position inside the epoch and the trainer's own
counters (logging window, best value, patience) -- and evaluation runs with the RNG states saved and
restored around it. So training N steps, stopping, and resuming to 2N gives bit-for-bit the parameters
and logged losses of 2N uninterrupted steps on CPU.

Weight averaging: with ``ema_decay`` the trainer keeps an exponential moving average of the weights in the
optimizer state (:mod:`attnlab.train.ema`); evaluations, ``OUT/best`` and snapshots use the average, ``OUT/last``
holds the trained weights and the average, and resume continues both exactly.

Time budgets: with ``schedule_by: time`` the learning rate follows the larger of the steps done and the share of
``max_minutes`` used (:mod:`attnlab.train.schedule`), so a run ends annealed on any machine; it depends on the
clock, so it is not reproducible step for step.

Data parallel: under torchrun (``dist``, :mod:`attnlab.train.distributed`) the model is wrapped in
DistributedDataParallel, each rank trains on its share of every batch with the loss divided by the global count,
rank 0 alone evaluates and writes, and clocks, signals and early stopping are agreed on every step.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import logging
import math
import random
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from tqdm.contrib.logging import logging_redirect_tqdm

from attnlab.core.config import to_dict
from attnlab.core.errors import ConfigError, DataError, DivergedError
from attnlab.core.train_config import TrainConfig
from attnlab.train.allocator import release_freed_memory
from attnlab.train.checkpoint import (
    capture_rng,
    load_checkpoint,
    mean_state,
    restore_rng,
    save_checkpoint,
    write_json_atomic,
)
from attnlab.train.distributed import SINGLE, DistContext, rows, seed_step, shard, sum_hook
from attnlab.train.ema import averaged_weights, drop_averages, update_averages
from attnlab.train.loss import teacher_forced_loss
from attnlab.train.progress import MetricsLog, ProgressBar, Throughput
from attnlab.train.schedule import WarmupSchedule
from attnlab.train.signals import StopSignals, TrainingInterrupted

logger = logging.getLogger(__name__)

StopReason = Literal["max_steps", "max_epochs", "max_minutes", "max_cpu_minutes", "early_stopping"]
Evaluate = Callable[[torch.nn.Module], Mapping[str, float]]
LossFn = Callable[[torch.nn.Module, Any], tuple[torch.Tensor, int]]
"""``loss(model, batch) -> (loss_sum, count)``: a differentiable float32 sum and the number of items summed."""

__all__ = ["BatchSource", "check_fresh_run_dir", "Evaluate", "LossFn", "StopReason", "TrainResult", "Trainer",
           "build_optimizer", "list_snapshots", "snapshot_name", "SNAPSHOTS_DIR"]


class BatchSource(Protocol):
    """What the trainer needs from its training data (e.g. :class:`attnlab.data.batching.BucketedBatches`).

    ``__iter__`` yields the remaining batches of the current epoch starting at the saved position, then
    advances ``epoch``. ``state_dict()`` is JSON-ready (``{"epoch", "position", "seed"}``) and, read right
    after a batch was yielded, already counts that batch, so that ``load_state_dict`` of it continues with
    the next one.
    """

    epoch: int

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns.

    Attributes:
        step: optimizer steps done in total (across resumes).
        epoch: the data epoch training stopped in.
        stop_reason: ``max_steps``, ``max_epochs`` or ``early_stopping``.
        final_loss: token-mean training loss of the last step (``nan`` if no step ran in this call).
        best_value, best_step: the best ``best_metric`` value and its step (``None`` before any evaluation).
        eval_metrics: the metrics of the last evaluation.
        out_dir: the run directory.
    """

    step: int
    epoch: int
    stop_reason: StopReason
    final_loss: float
    best_value: float | None
    best_step: int | None
    eval_metrics: dict[str, float]
    out_dir: Path


@dataclass
class _Counters:
    """The trainer's own resumable state (saved as ``trainer_state`` in every checkpoint)."""

    best_value: float | None = None
    best_step: int | None = None
    bad_evals: int = 0  # evaluations since the last improvement (early stopping)
    last_eval_step: int | None = None
    eval_metrics: dict[str, float] = field(default_factory=dict)
    log_loss_sum: float = 0.0  # current logging window
    log_tokens: int = 0
    eval_loss_sum: float = 0.0  # training loss since the last evaluation -> "train_loss"
    eval_tokens: int = 0
    tokens_seen: int = 0
    elapsed_s: float = 0.0  # wall-clock seconds of training (steps, evaluations, saves), across resumes
    cpu_s: float = 0.0  # process CPU seconds (all threads) of the same, across resumes

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> _Counters:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter 2019) with weight decay on matrices only (not on biases or norm gains)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters")
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": g, "weight_decay": wd} for g, wd in ((decay, config.weight_decay), (no_decay, 0.0)) if g]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps)


SNAPSHOTS_DIR = "snapshots"  # OUT/snapshots/step-NNNNNNN: the weights kept by ``keep_snapshots``


def snapshot_name(step: int) -> str:
    """Directory name of the snapshot of ``step`` (zero-padded, so names sort by step)."""
    return f"step-{step:07d}"


def list_snapshots(root: str | Path) -> list[Path]:
    """The snapshot checkpoints under ``root`` (``OUT/snapshots``), oldest step first; ``[]`` if there are none."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()
             and (p / "meta.json").exists()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def check_fresh_run_dir(out_dir: str | Path) -> None:
    """Raise :class:`ConfigError` if ``out_dir`` already holds a training run (a fresh run must not overwrite it)."""
    for name in ("last", "best", SNAPSHOTS_DIR, "metrics.jsonl"):
        if (Path(out_dir) / name).exists():
            raise ConfigError(f"{out_dir} already holds a training run ({name} exists); resume it with --resume "
                              f"or choose another output directory")


class Trainer:
    """Trains ``model`` on ``batches`` with ``config``, writing the run to ``out_dir`` (see the module docstring).

    Args:
        model: the module to train (moved to ``device``).
        config: optimization and run settings.
        batches: the training data (:class:`BatchSource`); its position is saved with every checkpoint.
        out_dir: the run directory; a fresh run refuses a directory that already holds one.
        evaluate: called every ``eval_every`` steps and at the end with the model; returns metrics such as
            ``{"val_loss": ...}`` (see :func:`attnlab.train.loss.loss_evaluator`). ``"train_loss"`` (the
            training loss since the previous evaluation) is always added.
        run_config: the whole run configuration (model, data, ...), saved to ``config.json`` and to every
            checkpoint with the TrainConfig under ``"train"``.
        extra_state: JSON-ready data saved with every checkpoint (tokenizer and vocabulary dicts).
        progress: show the progress bar (``None``: only when stderr is a terminal).
        device: where batches are moved (the model is moved there too).
        loss: the task's ``loss(model, batch) -> (loss_sum, count)`` (:data:`LossFn`), called under autocast when
            ``config.bf16``; default: teacher-forced cross-entropy of an :class:`EncoderDecoder` with
            ``config.label_smoothing``.
        dist: this process's place in a torchrun group (:func:`attnlab.train.distributed.setup`); the default is
            one process.
    """

    def __init__(self, model: torch.nn.Module, config: TrainConfig, batches: BatchSource, out_dir: str | Path, *,
                 evaluate: Evaluate | None = None, run_config: Mapping[str, Any] | None = None,
                 extra_state: Mapping[str, Any] | None = None, progress: bool | None = True,
                 device: torch.device | str = "cpu", loss: LossFn | None = None, dist: DistContext = SINGLE) -> None:
        if evaluate is None and config.best_metric != "train_loss":
            raise ConfigError(f"best_metric {config.best_metric!r} needs an evaluation function; pass evaluate= "
                              f"or set best_metric: train_loss")
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.dist = dist
        self.train_module: torch.nn.Module = self.model  # what the loss calls: the model, or its DDP wrapper
        if dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # Our models' buffers are fixed tables (positions, masks), equal on every rank: nothing to broadcast.
            self.train_module = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids,
                                                                          forward_sync_buffers=False)
            self.train_module.register_comm_hook(None, sum_hook)
        self.config = config
        self.batches = batches
        self.out_dir = Path(out_dir)
        self.evaluate = evaluate
        self.loss = loss or functools.partial(teacher_forced_loss, label_smoothing=config.label_smoothing)
        self.run_config = {**(run_config or {}), "train": to_dict(config)}
        self.extra_state = dict(extra_state or {})
        self.progress = progress
        self.optimizer = build_optimizer(model, config)
        self.schedule = WarmupSchedule(self.optimizer, config.schedule, base_lr=config.lr,
                                       warmup_steps=config.warmup_steps, max_steps=config.max_steps,
                                       min_lr_ratio=config.min_lr_ratio, decay_fraction=config.decay_fraction,
                                       budget_s=60 * config.max_minutes if config.schedule_by == "time" else None)
        self.metrics = MetricsLog(self.out_dir / "metrics.jsonl")
        self.step = 0
        self._counters = _Counters()
        self._data_state: dict[str, Any] = dict(batches.state_dict())
        self._saved_step: int | None = None
        self._last_loss = math.nan
        self._resumed = False
        self._tick, self._cpu_tick = time.perf_counter(), time.process_time()  # the training clocks (fit restarts them)

    @property
    def last_dir(self) -> Path:
        return self.out_dir / "last"

    @property
    def best_dir(self) -> Path:
        return self.out_dir / "best"

    # ------------------------------------------------------------------------------------ public API

    def resume(self) -> int:
        """Restore model, optimizer, schedule, RNG, data position and counters from ``OUT/last``; return the step."""
        ckpt = load_checkpoint(self.last_dir, self.model, self.optimizer)
        self.schedule.load_state_dict(ckpt.scheduler_state)
        restore_rng(ckpt.rng)
        self.batches.load_state_dict(ckpt.data_state)
        self._data_state = dict(ckpt.data_state)
        self._counters = _Counters.from_dict(ckpt.trainer_state)
        self.step = self._saved_step = ckpt.step
        if self.config.ema_decay == 0 and drop_averages(self.optimizer):
            logger.info("ema_decay is 0: the checkpoint's weight averages are dropped")
        if self.dist.is_main:
            self.metrics.truncate_after(ckpt.step)
        saved = ckpt.config.get("train", {}) if isinstance(ckpt.config, dict) else {}
        changed = sorted(k for k, v in self.run_config["train"].items() if k in saved and saved[k] != v)
        if changed:
            logger.info("resuming with changed training options: %s", ", ".join(changed))
        self._resumed = True
        logger.info("resumed from %s at step %d", ckpt.path, ckpt.step)
        return ckpt.step

    def fit(self, *, resume: bool = False) -> TrainResult:
        """Train until ``max_steps``, ``max_epochs`` or early stopping; with ``resume`` continue ``OUT/last``.

        Raises:
            DivergedError: a non-finite loss or gradient norm (the update is not applied, nothing is saved).
            TrainingInterrupted: SIGINT/SIGTERM; the current step was finished and saved to ``OUT/last``.
            ConfigError: ``out_dir`` already holds a run (without ``resume``) or cannot be written.
            CheckpointError: ``resume`` and ``OUT/last`` is missing or unreadable.
        """
        if resume and not self._resumed:
            self.resume()
        if not self._resumed:
            self._start_fresh()
        self._write_run_config()
        if self.step >= self.config.max_steps:
            logger.info("nothing to do: step %d already reaches max_steps=%d", self.step, self.config.max_steps)
            return self._result("max_steps")
        threads = torch.get_num_threads()
        if self.config.num_threads is not None:
            torch.set_num_threads(self.config.num_threads)
        bar = ProgressBar(self.config.max_steps, initial=self.step,
                          enabled=self.progress if self.dist.is_main else False)
        try:
            redirect = logging_redirect_tqdm() if bar.enabled else contextlib.nullcontext()
            # Under torchrun a Ctrl-C reaches each process twice (terminal, then torchrun): no abort on the second.
            with StopSignals(abort_on_second=not self.dist.enabled) as signals, redirect:
                result = self._loop(signals, bar)
            self.dist.barrier()  # rank 0 may still be writing the final checkpoint
            return result
        finally:
            bar.close()
            torch.set_num_threads(threads)

    # ------------------------------------------------------------------------------------- internals

    def _start_fresh(self) -> None:
        check_fresh_run_dir(self.out_dir)
        seed = self.config.seed
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        self._resumed = True  # a second fit() call continues this run

    def _write_run_config(self) -> None:
        if not self.dist.is_main:
            return
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.out_dir / "config.json", self.run_config)
        except OSError as exc:
            raise ConfigError(f"cannot write to output directory {self.out_dir}: {exc.strerror or exc}; "
                              f"choose another one with --out") from None

    def _loop(self, signals: StopSignals, bar: ProgressBar) -> TrainResult:
        cfg = self.config
        reason: StopReason | None = None
        empty_passes = 0
        meter = Throughput()
        start = self._tick = time.perf_counter()
        self._cpu_tick = time.process_time()
        while reason is None:
            if cfg.max_epochs is not None and self.batches.epoch >= cfg.max_epochs:
                reason = "max_epochs"
                break
            consumed = 0
            for batch in self.batches:
                consumed += 1
                self._data_state = dict(self.batches.state_dict())  # the position after this batch
                self._train_step(batch, bar, meter, start)
                reason = self._after_step(signals)
                if reason is not None:
                    break
            else:
                self._data_state = dict(self.batches.state_dict())
            empty_passes = empty_passes + 1 if consumed == 0 else 0
            if empty_passes >= 2:
                raise DataError("the training data yields no batches; check the data files and the length limits")
        self._finish(signals)
        logger.info("training stopped at step %d (%s)", self.step, reason.replace("_", " "))
        return self._result(reason)

    def _train_step(self, batch: Any, bar: ProgressBar, meter: Throughput, start: float) -> None:
        """One update on the task's loss; raises :class:`DivergedError` before applying a non-finite one."""
        cfg = self.config
        step = self.step + 1
        seed_step(cfg.seed, step, self.dist)  # DDP only: this rank's dropout stream for this step
        batch = batch.to(self.device)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.schedule.lr
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            loss_sum, num_tokens = self._local_loss(batch)  # float32 sum over num_tokens items
        loss_value = float(loss_sum.detach())
        if self.dist.enabled:  # the global sum and count: every rank divides by the same count
            loss_value, count = self.dist.all_sum([loss_value, float(num_tokens)])
            num_tokens = int(count)
        if not math.isfinite(loss_value):
            self._diverged(step, f"the loss is {loss_value}")
        (loss_sum / max(num_tokens, 1)).backward()
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        max_norm = cfg.clip_grad_norm if cfg.clip_grad_norm is not None else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        if not math.isfinite(grad_norm):
            self._diverged(step, f"the gradient norm is {grad_norm}")
        self.optimizer.step()
        if cfg.ema_decay > 0:
            update_averages(self.optimizer, cfg.ema_decay, step)
        # Only a time schedule reads the clock here; under DDP its reading must be rank 0's, so agree on it then.
        self._tick_clock([], sync=cfg.schedule_by == "time")
        self.schedule.step(self._counters.elapsed_s)
        self.step = step

        c = self._counters
        c.log_loss_sum += loss_value
        c.log_tokens += num_tokens
        c.eval_loss_sum += loss_value
        c.eval_tokens += num_tokens
        c.tokens_seen += num_tokens
        meter.add(num_tokens)
        self._last_loss = loss_value / max(num_tokens, 1)
        if step % cfg.log_every == 0 and self.dist.is_main:
            window_loss = c.log_loss_sum / max(c.log_tokens, 1)
            rate = meter.rate()
            self.metrics.write({"kind": "train", "step": step, "epoch": int(self.batches.epoch), "loss": window_loss,
                                "lr": lr, "grad_norm": grad_norm, "tokens": c.log_tokens, "tokens_per_s": rate,
                                "elapsed_s": round(time.perf_counter() - start, 3)})
            c.log_loss_sum, c.log_tokens = 0.0, 0
            bar.update(step, loss=window_loss, tokens_per_s=rate, lr=lr)

    def _local_loss(self, batch: Any) -> tuple[torch.Tensor, int]:
        """The task's loss on this process's rows of ``batch``. A rank left without rows (a batch smaller than the
        group) runs its forward and backward on the batch's first row with weight 0: every rank must take part
        in DDP's forward and gradient reduction, and a zero adds nothing."""
        if not self.dist.enabled:
            return self.loss(self.train_module, batch)
        part = shard(batch, self.dist)
        if rows(part) > 0:
            return self.loss(self.train_module, part)
        loss_sum, _ = self.loss(self.train_module, shard(batch, DistContext(0, rows(batch))))
        return loss_sum * 0.0, 0

    def _tick_clock(self, flags: list[bool], *, sync: bool = True) -> list[bool]:
        """Add the time since the last tick to the training clocks; under DDP take rank 0's clocks and OR
        ``flags`` across ranks (one collective), so that every rank decides alike. Returns the flags."""
        now, cpu_now = time.perf_counter(), time.process_time()
        c = self._counters
        c.elapsed_s += now - self._tick
        c.cpu_s += cpu_now - self._cpu_tick
        self._tick, self._cpu_tick = now, cpu_now
        if not (self.dist.enabled and sync):
            return flags
        (c.elapsed_s, c.cpu_s), flags = self.dist.agree([c.elapsed_s, c.cpu_s], flags)
        return flags

    def _diverged(self, step: int, what: str) -> None:
        kept = (f"the last good checkpoint is {self.last_dir} (step {self._saved_step})" if self._saved_step
                is not None else "no checkpoint was saved yet")
        raise DivergedError(f"training diverged at step {step}: {what}; the update was not applied and {kept}; "
                            f"try a lower lr, more warmup_steps or clip_grad_norm")

    def _after_step(self, signals: StopSignals) -> StopReason | None:
        """Evaluate, save and check the stop conditions after a completed step."""
        cfg = self.config
        reason: StopReason | None = None
        early = self.step % cfg.eval_every == 0 and self._evaluate(signals)
        # ``stop`` is read once and (under DDP) agreed: a signal arriving after this point is seen after the next
        # step, on every rank alike, never by one rank alone.
        early, stop = self._tick_clock([early, signals.requested])
        if stop:  # under DDP a signal that reached another rank stops this one too
            signals.request()
        if early:
            reason = "early_stopping"
        if reason is None and self.step >= cfg.max_steps:
            reason = "max_steps"
        # Time budgets: where they stop depends on the machine's speed, so they are not reproducible.
        if reason is None and cfg.max_minutes is not None and self._counters.elapsed_s >= 60 * cfg.max_minutes:
            reason = "max_minutes"
        if reason is None and cfg.max_cpu_minutes is not None and self._counters.cpu_s >= 60 * cfg.max_cpu_minutes:
            reason = "max_cpu_minutes"
        if reason is None and (self.step % cfg.save_every == 0 or stop):
            self._save(self.last_dir, signals)
        if reason is None and stop:
            signum = signals.signum or signal.SIGTERM
            raise TrainingInterrupted(f"training interrupted by {signal.Signals(signum).name} after step {self.step}; "
                                      f"checkpoint saved to {self.last_dir}; continue with --resume",
                                      signum=signum, step=self.step, saved=True)
        return reason

    def _finish(self, signals: StopSignals) -> None:
        """Final evaluation (unless one just ran), the final ``OUT/last`` checkpoint and, with
        ``average_snapshots``, the evaluation of the snapshots' mean."""
        if self._counters.last_eval_step != self.step and self._counters.eval_tokens > 0:
            self._evaluate(signals)
        if self._saved_step != self.step:
            self._save(self.last_dir, signals)
        if self.config.average_snapshots and self.dist.is_main:
            self._average_snapshots(signals)
        release_freed_memory()  # the other ranks now wait at the last barrier; rank 0 goes on to its final work

    def _task_metrics(self) -> dict[str, float]:
        """The evaluation function's metrics of the model's current weights (``{}`` without one)."""
        if self.evaluate is None:
            return {}
        rng = capture_rng()  # evaluation must not shift the training random streams
        try:
            # The tasks' evaluators work on the CPU: off it, they get a CPU copy (not tested: no GPU here).
            model = self.model if self.device.type == "cpu" else copy.deepcopy(self.model).to("cpu")
            return {str(k): float(v) for k, v in self.evaluate(model).items()}
        finally:
            restore_rng(rng)
            self.model.train()

    def _beats_best(self, value: float) -> bool:
        """Whether ``value`` of ``best_metric`` improves on the best so far (never when NaN)."""
        best, mode = self._counters.best_value, self.config.best_mode
        return not math.isnan(value) and (best is None or (value < best if mode == "min" else value > best))

    def _average_snapshots(self, signals: StopSignals) -> None:
        """Evaluate the mean of the kept snapshots; if its ``best_metric`` beats ``OUT/best``'s, it becomes
        ``OUT/best`` (an inference checkpoint listing its sources under ``averaged_from``). Logged as an
        ``"average"`` record; the model keeps its trained weights."""
        cfg, c = self.config, self._counters
        snapshots = [load_checkpoint(path) for path in list_snapshots(self.out_dir / SNAPSHOTS_DIR)]
        if len(snapshots) < 2:
            logger.warning("average_snapshots: %d snapshot(s) kept, nothing to average", len(snapshots))
            return
        trained = {name: t.clone() for name, t in self.model.state_dict().items()}
        self.model.load_state_dict(mean_state([s.model_state for s in snapshots], list(trained)))
        try:
            metrics = self._task_metrics()
            value = metrics.get(cfg.best_metric, math.nan)
            better = self._beats_best(value)
            steps = [s.step for s in snapshots]
            self.metrics.write({"kind": "average", "step": self.step, "snapshots": steps, **metrics,
                                "selected": better})
            logger.info("average of the snapshots of steps %s: %s=%.4g against OUT/best's %.4g (step %s): %s",
                        ", ".join(map(str, steps)), cfg.best_metric, value,
                        c.best_value if c.best_value is not None else math.nan, c.best_step,
                        "it becomes OUT/best" if better else "OUT/best stays")
            if better:
                extra = {**self.extra_state, "averaged_from": [{"path": str(s.path), "step": s.step}
                                                               for s in snapshots]}
                with signals.critical():
                    save_checkpoint(self.best_dir, model=self.model, step=self.step, config=self.run_config,
                                    extra=extra)
                c.best_value, c.best_step = value, self.step
        finally:
            self.model.load_state_dict(trained)

    def _evaluate(self, signals: StopSignals) -> bool:
        """Run the evaluation, log it, update ``OUT/best``; return whether early stopping triggers."""
        c = self._counters
        if not self.dist.is_main:  # rank 0 evaluates; the others wait at the next collective
            c.eval_loss_sum, c.eval_tokens, c.last_eval_step = 0.0, 0, self.step
            release_freed_memory()  # while waiting, hold only what is live
            return False
        try:
            with self._evaluated_weights():
                return self._evaluate_main(signals)
        finally:
            release_freed_memory()  # the evaluation's buffers leave with it

    def _evaluated_weights(self) -> contextlib.AbstractContextManager[Any]:
        """The weights that are evaluated and kept in ``OUT/best`` and snapshots: the averages with ``ema_decay``."""
        return averaged_weights(self.optimizer) if self.config.ema_decay > 0 else contextlib.nullcontext()

    def _evaluate_main(self, signals: StopSignals) -> bool:
        """Rank 0's evaluation (see :meth:`_evaluate`)."""
        cfg, c = self.config, self._counters
        metrics = {"train_loss": c.eval_loss_sum / c.eval_tokens if c.eval_tokens else math.nan}
        metrics.update(self._task_metrics())
        c.eval_loss_sum, c.eval_tokens = 0.0, 0
        c.last_eval_step = self.step
        c.eval_metrics = metrics
        self.metrics.write({"kind": "eval", "step": self.step, "epoch": int(self.batches.epoch), **metrics})
        logger.info("step %d: %s", self.step, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        if cfg.best_metric not in metrics:
            raise ConfigError(f"best_metric {cfg.best_metric!r} is not among the evaluation metrics "
                              f"({', '.join(sorted(metrics))}); set best_metric to one of them")
        value = metrics[cfg.best_metric]
        if self._beats_best(value):
            c.best_value, c.best_step, c.bad_evals = value, self.step, 0
            self._save(self.best_dir, signals)
        else:
            c.bad_evals += 1
        patience = cfg.early_stopping_patience
        if patience is not None and c.bad_evals >= patience:
            logger.info("early stopping: %s has not improved for %d evaluations (best %.4g at step %s)",
                        cfg.best_metric, c.bad_evals, c.best_value if c.best_value is not None else math.nan,
                        c.best_step)
            return True
        return False

    def _save(self, directory: Path, signals: StopSignals) -> None:
        if not self.dist.is_main:  # rank 0 writes; the model, optimizer and data position are the same on all
            if directory == self.last_dir:
                self._saved_step = self.step
            return
        with signals.critical():
            save_checkpoint(directory, model=self.model, optimizer=self.optimizer,
                            scheduler_state=self.schedule.state_dict(), step=self.step, rng=capture_rng(),
                            data_state=self._data_state, config=self.run_config, extra=self.extra_state,
                            trainer_state=dataclasses.asdict(self._counters))
        if directory == self.last_dir:
            self._saved_step = self.step
            if self.config.keep_snapshots:
                self._snapshot(signals)

    def _snapshot(self, signals: StopSignals) -> None:
        """Keep the model weights of this step in ``OUT/snapshots`` and drop all but the newest ``keep_snapshots``."""
        root = self.out_dir / SNAPSHOTS_DIR
        with signals.critical(), self._evaluated_weights():
            save_checkpoint(root / snapshot_name(self.step), model=self.model, step=self.step,
                            config=self.run_config, extra=self.extra_state)
        for old in list_snapshots(root)[:-self.config.keep_snapshots]:
            shutil.rmtree(old, ignore_errors=True)

    def _result(self, reason: StopReason) -> TrainResult:
        c = self._counters
        return TrainResult(step=self.step, epoch=int(self.batches.epoch), stop_reason=reason,
                           final_loss=self._last_loss, best_value=c.best_value, best_step=c.best_step,
                           eval_metrics=dict(c.eval_metrics), out_dir=self.out_dir)
