"""An exponential moving average of the weights (Polyak averaging): the weights that are evaluated and kept.

Small datasets make the validation score of the last step swing from one evaluation to the next; the average of
the recent weights is steadier and usually a little better (Polyak & Juditsky 1992; the decay warm-up
``min(decay, (1 + t) / (10 + t))`` is TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``).

The average of each parameter lives in the optimizer's state next to the AdamW moments (``state[p]["ema"]``), so
it is saved to ``optimizer.safetensors`` with them and a resumed run continues it exactly. A parameter that AdamW
has not updated yet (no gradient so far) has no state and its average is itself; its average starts at its first
update.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["EMA_KEY", "averaged_weights", "drop_averages", "ema_rate", "update_averages"]

EMA_KEY = "ema"
"""Key of a parameter's average in ``optimizer.state[p]``."""


def ema_rate(decay: float, step: int) -> float:
    """The decay used after optimizer step ``step`` (1-based): ``decay``, lowered early on so the start is forgotten."""
    return min(decay, (1.0 + step) / (10.0 + step))


def _params(optimizer: torch.optim.Optimizer) -> Iterator[torch.Tensor]:
    for group in optimizer.param_groups:
        yield from group["params"]


@torch.no_grad()
def update_averages(optimizer: torch.optim.Optimizer, decay: float, step: int) -> None:
    """Move every average towards its parameter after optimizer step ``step``: ``avg += (1 - rate) * (p - avg)``."""
    rate = ema_rate(decay, step)
    averages, params = [], []
    for p in _params(optimizer):
        state = optimizer.state.get(p)
        if not state:  # not updated yet: adding a key would make AdamW skip initializing its moments
            continue
        avg = state.get(EMA_KEY)
        if avg is None:
            state[EMA_KEY] = p.detach().clone()
        else:
            averages.append(avg)
            params.append(p.detach())
    if averages:
        torch._foreach_lerp_(averages, params, 1.0 - rate)


def drop_averages(optimizer: torch.optim.Optimizer) -> int:
    """Remove the averages (a run resumed with ``ema_decay: 0``); returns how many there were."""
    dropped = 0
    for p in _params(optimizer):
        state = optimizer.state.get(p)
        if state and state.pop(EMA_KEY, None) is not None:
            dropped += 1
    return dropped


@contextlib.contextmanager
def averaged_weights(optimizer: torch.optim.Optimizer) -> Iterator[bool]:
    """Put the averages into the parameters for the ``with`` block and the trained weights back afterwards.

    Yields whether any parameter has an average (``False``: nothing was swapped).
    """
    swapped: list[tuple[torch.Tensor, torch.Tensor]] = []
    with torch.no_grad():
        for p in _params(optimizer):
            state = optimizer.state.get(p)
            avg = state.get(EMA_KEY) if state else None
            if avg is not None:
                swapped.append((p, p.detach().clone()))
                p.copy_(avg)
    try:
        yield bool(swapped)
    finally:
        with torch.no_grad():
            for p, trained in swapped:
                p.copy_(trained)
