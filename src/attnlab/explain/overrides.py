"""Replace attention weights exactly: uniform or permuted attention (Jain & Wallace, 2019, sections 4.1-4.2).

The replacement goes through the attention module's weights hooks (``register_weights_hook`` on
``MultiHeadAttention`` and ``AttentionPooling``): the module mixes its values with exactly the weights given and
returns them as its weights, so a capture (or ``need_weights``) shows what the model used.

Dimension legend: ``B`` batch, ``Tq``/``Tk`` query/key length; weights are ``(B, ..., Tq, Tk)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from attnlab.core.errors import ConfigError


def _valid(weights: torch.Tensor, valid_lens: torch.Tensor | None) -> torch.Tensor:
    """``(B, 1.., Tk)`` True at real keys (all keys without ``valid_lens``)."""
    Tk = weights.shape[-1]
    if valid_lens is None:
        return torch.ones(weights.shape[0], *([1] * (weights.dim() - 2)), Tk, dtype=torch.bool, device=weights.device)
    keep = torch.arange(Tk, device=weights.device) < valid_lens.to(weights.device)[:, None]  # (B, Tk)
    return keep.reshape(weights.shape[0], *([1] * (weights.dim() - 2)), Tk)


def uniform_weights(weights: torch.Tensor, valid_lens: torch.Tensor | None = None) -> torch.Tensor:
    """``1 / n`` on each row's ``n`` real keys, 0 on padding (rows of a fully masked item stay 0)."""
    keep = _valid(weights, valid_lens).expand_as(weights).to(weights.dtype)
    return keep / keep.sum(-1, keepdim=True).clamp_min(1)


def permuted_weights(weights: torch.Tensor, generator: torch.Generator,
                     valid_lens: torch.Tensor | None = None) -> torch.Tensor:
    """Each row's weights shuffled over its real keys (an independent permutation per row), padding left at 0."""
    keep = _valid(weights, valid_lens).expand_as(weights)
    keys = torch.rand(weights.shape, generator=generator).to(weights.device)
    keys = keys.masked_fill(~keep, float("inf"))  # padding sorts last and maps to itself below
    order = keys.argsort(dim=-1)  # (..., Tk): a random order of the real keys, then the padding
    rank = torch.arange(weights.shape[-1], device=weights.device).expand_as(weights)
    source = torch.where(keep, order, rank)  # real slot j takes the weight of real key order[j]
    return weights.gather(-1, source)


@contextmanager
def override_attention(module: nn.Module, replace: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """While the block runs, ``module`` attends with ``replace(weights)`` instead of its own weights."""
    if not hasattr(module, "register_weights_hook"):
        raise ConfigError(f"{type(module).__name__} has no weights hooks; override MultiHeadAttention or "
                          "AttentionPooling modules")
    handle = module.register_weights_hook(lambda mod, weights: replace(weights))
    try:
        yield
    finally:
        handle.remove()
