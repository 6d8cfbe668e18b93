"""The typed, validated training configuration used by :class:`attnlab.train.Trainer`.

A frozen dataclass whose field help texts become the CLI ``--help``; it round-trips through JSON with
:func:`attnlab.core.config.to_dict` / :func:`train_config_from_dict` and is saved with every run and
checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from attnlab.core.config import check_range, from_dict, option, short_repr, validate_types
from attnlab.core.errors import ConfigError

ScheduleKind = Literal["inverse_sqrt", "cosine", "constant", "wsd"]
ScheduleBy = Literal["steps", "time"]
MetricMode = Literal["min", "max"]
DeviceKind = Literal["auto", "cpu", "cuda"]
MAX_PROCESSES = 256
"""The most processes ``train.processes`` starts on one machine."""

__all__ = ["DeviceKind", "MetricMode", "ScheduleBy", "ScheduleKind", "TrainConfig", "train_config_from_dict"]


@dataclass(frozen=True)
class TrainConfig:
    """Optimization, schedule, evaluation, checkpointing and logging settings of one training run."""

    lr: float = option(1e-3, help="peak learning rate of AdamW (reached at the end of warmup)")
    betas: tuple[float, float] = option((0.9, 0.98), help="AdamW (beta1, beta2) moment decay rates")
    eps: float = option(1e-9, help="AdamW epsilon added to the denominator")
    weight_decay: float = option(0.01, help="decoupled weight decay of matrices (biases and norms are not decayed)")
    warmup_steps: int = option(100, help="steps of linear learning-rate warmup from 0 to lr")
    schedule: ScheduleKind = option("inverse_sqrt", help="learning-rate decay after warmup: inverse_sqrt "
                                                         "(Vaswani et al. 2017), cosine (to min_lr_ratio at "
                                                         "max_steps), constant, or wsd (warmup-stable-decay: "
                                                         "constant, then linear to min_lr_ratio over the last "
                                                         "decay_fraction of max_steps)")
    min_lr_ratio: float = option(0.0, help="cosine and wsd schedules: final learning rate as a fraction of lr")
    decay_fraction: float = option(0.2, help="wsd schedule: the share of max_steps (or of the time budget) at "
                                             "its end over which the learning rate decays")
    schedule_by: ScheduleBy = option("steps", help="what drives warmup and decay: steps (towards max_steps) or "
                                                   "time (also the fraction of max_minutes used, whichever runs "
                                                   "out first, so training ends annealed on any machine)")
    max_steps: int = option(2000, help="stop after this many optimizer steps")
    max_epochs: int | None = option(None, help="also stop after this many passes over the training batches")
    max_minutes: float | None = option(None, help="also stop after this many minutes of wall-clock training "
                                                  "(evaluation included, summed over resumes); not reproducible")
    max_cpu_minutes: float | None = option(None, help="also stop after this many minutes of process CPU time (all "
                                                      "threads; summed over resumes): a budget that does not shrink "
                                                      "when other jobs share the machine")
    label_smoothing: float = option(0.1, help="label smoothing of the cross-entropy (0 = off)")
    init_from: str | None = option(None, help="start a fresh run from this checkpoint's weights (a run directory "
                                              "gives its best/): the parameters under init_modules, or all whose "
                                              "names and shapes match, are copied; the rest start fresh")
    init_modules: list[str] = option(default_factory=list, help="parameter name prefixes to copy from init_from, "
                                                                "e.g. [patch_embedding] (empty: every match)")
    adversarial_eps: float = option(0.0, help="adversarial training on the embeddings (fast gradient method, Miyato "
                                              "et al. 2017): each step also trains on every text's embeddings "
                                              "moved by this L2 distance along its loss gradient (0 = off; text "
                                              "classification only; about 2.5x the step time)")
    clip_grad_norm: float | None = option(1.0, help="clip the global gradient norm to this value (none = off)")
    eval_every: int = option(200, help="evaluate (and maybe save the best checkpoint) every N steps")
    save_every: int = option(200, help="save the latest checkpoint to OUT/last every N steps")
    keep_snapshots: int = option(0, help="also keep the model weights of the last N saves of OUT/last (every "
                                         "save_every steps and the final step) in OUT/snapshots/step-NNNNNNN, "
                                         "for checkpoint averaging with `attnlab average` (0 = off)")
    average_snapshots: bool = option(False, help="after training, evaluate the mean of the kept snapshots "
                                                 "(keep_snapshots >= 2) like any evaluation; if its best_metric "
                                                 "beats OUT/best's it becomes OUT/best, the checkpoint the test "
                                                 "split is scored with")
    ema_decay: float = option(0.0, help="keep an exponential moving average of the weights (Polyak averaging) with "
                                        "this decay, e.g. 0.998 (0 = off); evaluation, OUT/best and snapshots use "
                                        "the averaged weights, OUT/last keeps the trained ones and the average")
    early_stopping_patience: int | None = option(None, help="stop after this many evaluations without "
                                                            "improvement of best_metric (none = off)")
    best_metric: str = option("val_loss", help="evaluation metric that selects OUT/best ('train_loss' is always "
                                               "available; others come from the evaluation function)")
    best_mode: MetricMode = option("min", help="whether a smaller (min) or larger (max) best_metric is better")
    seed: int = option(0, help="seed of the torch, random and numpy generators at the start of training")
    tokens_per_batch: int = option(4096, help="token budget of one length-bucketed batch")
    batch_size: int = option(128, help="image tasks: images per batch (text tasks batch by tokens_per_batch)")
    log_every: int = option(10, help="write a metrics line (loss, lr, tokens/s) every N steps")
    bf16: bool = option(False, help="run forward passes under CPU bfloat16 autocast")
    num_threads: int | None = option(None, help="torch intra-op CPU threads during training (none = torch default)")
    processes: int = option(1, help="data-parallel processes `attnlab train` runs on this machine: itself as rank 0 "
                                    f"and the others it starts (each with num_threads threads; at most "
                                    f"{MAX_PROCESSES}); ignored under torchrun, which decides")
    device: DeviceKind = option("auto", help="where to train: cpu, cuda, or auto (cuda when available); under "
                                             "torchrun each process takes the GPU of its local rank")

    def __post_init__(self) -> None:
        if isinstance(self.betas, list):  # from JSON/YAML
            object.__setattr__(self, "betas", tuple(self.betas))
        validate_types(self)
        owner = type(self).__name__
        if len(self.betas) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool)
                                           for b in self.betas):
            raise ConfigError(f"{owner}.betas: got {short_repr(self.betas)}, expected two numbers (beta1, beta2)")
        for i, beta in enumerate(self.betas):
            if not 0.0 <= beta < 1.0:
                raise ConfigError(f"{owner}.betas[{i}]: got {short_repr(beta)}, expected a value in [0, 1)")
        check_range(owner, "lr", self.lr, low=0.0, low_inclusive=False)
        check_range(owner, "eps", self.eps, low=0.0, low_inclusive=False)
        check_range(owner, "weight_decay", self.weight_decay, low=0.0)
        check_range(owner, "warmup_steps", self.warmup_steps, low=0)
        check_range(owner, "min_lr_ratio", self.min_lr_ratio, low=0.0, high=1.0)
        check_range(owner, "decay_fraction", self.decay_fraction, low=0.0, high=1.0, low_inclusive=False)
        check_range(owner, "keep_snapshots", self.keep_snapshots, low=0)
        if self.average_snapshots and self.keep_snapshots < 2:
            raise ConfigError(f"{owner}.average_snapshots: averages the kept snapshots; set keep_snapshots to 2 or "
                              f"more (got {self.keep_snapshots})")
        check_range(owner, "adversarial_eps", self.adversarial_eps, low=0.0)
        if self.init_modules and self.init_from is None:
            raise ConfigError(f"{owner}.init_modules: names what to copy from init_from; set init_from too")
        if not all(isinstance(m, str) and m for m in self.init_modules):
            raise ConfigError(f"{owner}.init_modules: expected parameter name prefixes such as 'patch_embedding', "
                              f"got {short_repr(self.init_modules)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"{owner}.ema_decay: got {short_repr(self.ema_decay)}, expected a value in [0, 1)")
        check_range(owner, "seed", self.seed, low=0, high=2**63 - 1)  # torch.manual_seed takes a signed 64-bit int
        for name in ("max_steps", "eval_every", "save_every", "tokens_per_batch", "batch_size", "log_every"):
            check_range(owner, name, getattr(self, name), low=1)
        for name in ("max_minutes", "max_cpu_minutes"):
            if getattr(self, name) is not None:
                check_range(owner, name, getattr(self, name), low=0.0, low_inclusive=False)
        check_range(owner, "processes", self.processes, low=1, high=MAX_PROCESSES)
        for name in ("max_epochs", "early_stopping_patience", "num_threads"):
            if getattr(self, name) is not None:
                check_range(owner, name, getattr(self, name), low=1)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"{owner}.label_smoothing: got {short_repr(self.label_smoothing)}, expected a value in "
                              f"[0, 1)")
        if self.clip_grad_norm is not None:
            check_range(owner, "clip_grad_norm", self.clip_grad_norm, low=0.0, low_inclusive=False)
        if self.schedule_by == "time" and self.max_minutes is None:
            raise ConfigError(f"{owner}.schedule_by: 'time' needs a time budget: set max_minutes")
        if not self.best_metric:
            raise ConfigError(f"{owner}.best_metric: expected a metric name such as 'val_loss', got an empty string")


def train_config_from_dict(data: dict[str, Any], *, where: str = "train") -> TrainConfig:
    """Build a :class:`TrainConfig` from a JSON/YAML mapping; bad or unknown keys raise :class:`ConfigError`."""
    return from_dict(TrainConfig, data, where=where)
