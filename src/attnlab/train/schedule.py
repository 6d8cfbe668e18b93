"""Learning-rate schedules: linear warmup followed by inverse-square-root, cosine, constant or warmup-stable-decay.

:func:`lr_factor` is the pure math; :class:`WarmupSchedule` applies it to an optimizer like
``torch.optim.lr_scheduler.LambdaLR`` does, but its state is JSON-ready (the step count and, for a time
budget, the elapsed seconds) and the base learning rate comes from the config, not from the optimizer's
(possibly restored) param groups.

Step or time. A recipe plans ``max_steps`` from one machine's speed; on a slower or busier machine its time
budget (``max_minutes``) ends first and a step-driven cosine is cut before it anneals. With a time budget
(``WarmupSchedule(..., budget_s=...)``) the schedule runs on *effective steps*: the larger of the steps done
and ``max_steps`` times the fraction of the budget used. Warmup and decay then follow whichever runs out
first, so training ends annealed at ``max_steps`` or at the end of the budget, whatever the machine's speed;
where the steps run out first it is exactly the step schedule.
"""

from __future__ import annotations

import math
from typing import Any, get_args

import torch

from attnlab.core.train_config import ScheduleKind

__all__ = ["WarmupSchedule", "lr_factor"]


def lr_factor(kind: ScheduleKind, step: float, *, warmup_steps: int, max_steps: int,
              min_lr_ratio: float = 0.0, decay_fraction: float = 0.2) -> float:
    """Multiplier of the peak learning rate for optimizer step ``step`` (1-based: the first update is step 1;
    a fractional ``step`` is an effective step of a time-budgeted schedule).

    - warmup (all kinds): ``step / warmup_steps`` while ``step <= warmup_steps``;
    - ``inverse_sqrt``: ``sqrt(warmup_steps / step)`` afterwards (Vaswani et al. 2017, eq. 3, rescaled to
      peak at 1; with no warmup, ``1 / sqrt(step)``);
    - ``cosine``: ``r + (1 - r) * (1 + cos(pi * p)) / 2`` with ``p`` the fraction of post-warmup steps done
      by ``max_steps`` (clamped to 1) and ``r = min_lr_ratio`` (Loshchilov & Hutter 2017, no restarts);
    - ``constant``: ``1``;
    - ``wsd`` (warmup-stable-decay; Hu et al. 2024, Hägele et al. 2024): ``1`` until the last ``decay_fraction``
      of ``max_steps``, then linear to ``min_lr_ratio`` at ``max_steps``. Unlike cosine it keeps the peak rate
      for most of the run, and a run cut short before its decay loses only the decay.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if warmup_steps > 0 and step <= warmup_steps:
        return step / warmup_steps
    if kind == "inverse_sqrt":
        return math.sqrt(max(warmup_steps, 1) / max(step, 1))
    if kind == "cosine":
        progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if kind == "constant":
        return 1.0
    if kind == "wsd":
        decay_start = max(warmup_steps, max_steps * (1.0 - decay_fraction))
        if step <= decay_start:
            return 1.0
        progress = min(1.0, (step - decay_start) / max(1e-9, max_steps - decay_start))
        return 1.0 - (1.0 - min_lr_ratio) * progress
    raise ValueError(f"unknown schedule {kind!r}; expected one of {', '.join(get_args(ScheduleKind))}")


class WarmupSchedule:
    """Sets every param group's ``lr`` to ``base_lr * lr_factor(step + 1)`` before each optimizer step.

    Usage: ``optimizer.step(); schedule.step()`` (``schedule.step(elapsed_s)`` with a time budget). At
    construction the learning rate of the first update is applied. :meth:`state_dict` is ``{"step": n,
    "elapsed_s": t}`` with ``n`` the number of updates done and ``t`` the training seconds when the last one
    was recorded.

    Args:
        budget_s: the time budget in seconds: the schedule runs on :meth:`effective_step` (see the module
            docstring). ``None``: on steps alone.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, kind: ScheduleKind, *, base_lr: float, warmup_steps: int,
                 max_steps: int, min_lr_ratio: float = 0.0, decay_fraction: float = 0.2,
                 budget_s: float | None = None) -> None:
        if budget_s is not None and not budget_s > 0:
            raise ValueError(f"budget_s must be > 0 seconds or None, got {budget_s}")
        self.optimizer = optimizer
        self.kind = kind
        self.base_lr = base_lr
        self.warmup_steps = warmup_steps
        self.max_steps = max_steps
        self.min_lr_ratio = min_lr_ratio
        self.decay_fraction = decay_fraction
        self.budget_s = budget_s
        self.last_step = 0
        self.elapsed_s = 0.0
        self._apply()

    def factor(self, step: float) -> float:
        """The multiplier of (effective) optimizer step ``step`` (1-based)."""
        return lr_factor(self.kind, step, warmup_steps=self.warmup_steps, max_steps=self.max_steps,
                         min_lr_ratio=self.min_lr_ratio, decay_fraction=self.decay_fraction)

    def effective_step(self, step: int, elapsed_s: float) -> float:
        """``step``, or with a time budget ``max(step, max_steps * elapsed_s / budget_s)``."""
        if self.budget_s is None:
            return step
        return max(float(step), self.max_steps * min(1.0, elapsed_s / self.budget_s))

    @property
    def lr(self) -> float:
        """The learning rate the next optimizer step will use."""
        return self.base_lr * self.factor(self.effective_step(self.last_step + 1, self.elapsed_s))

    def _apply(self) -> None:
        lr = self.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self, elapsed_s: float | None = None) -> None:
        """Record one optimizer update (done after ``elapsed_s`` seconds of training) and set the learning rate
        of the next one."""
        self.last_step += 1
        if elapsed_s is not None:
            self.elapsed_s = float(elapsed_s)
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.last_step, "elapsed_s": self.elapsed_s}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        step = state.get("step")
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"schedule state needs a non-negative integer 'step', got {str(state)[:80]}")
        elapsed = state.get("elapsed_s", 0.0)  # absent in checkpoints of step schedules before time budgets
        if isinstance(elapsed, bool) or not isinstance(elapsed, (int, float)) or not elapsed >= 0:
            raise ValueError(f"schedule state needs non-negative 'elapsed_s' seconds, got {str(state)[:80]}")
        self.last_step, self.elapsed_s = step, float(elapsed)
        self._apply()
