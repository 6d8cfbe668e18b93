"""Dropout with a cheaper mask on the CPU.

PyTorch's dropout draws its CPU mask with ``bernoulli_``: on one thread here, forward and backward of a
``(2048, 128)`` tensor took 2.5 ms in float32 and in bfloat16, and a Transformer-tiny training step holds 30 of
them. :func:`dropout` draws 31 random bits per element with ``random_`` and keeps the elements whose bits are at
least ``p * 2^31``: 1.1 ms for the same work (``benchmarks/train_kernels.py``). It scales the kept elements by
``1 / (1 - p)`` as PyTorch does, so the expected output is the input. The mask comes from PyTorch's default
generator, so ``torch.manual_seed`` and a saved RNG state reproduce it; it is a different draw from PyTorch's own
for the same seed. Attention weights keep PyTorch's dropout (``explicit_attention``): the fused kernel draws the
same mask as the explicit path that way. Elsewhere (CUDA's fused dropout is fast), and for ``p`` of 0 or 1,
PyTorch's :func:`torch.nn.functional.dropout` runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

__all__ = ["Dropout", "dropout", "relu_dropout"]

_BITS = 2 ** 31  # int32 random_() draws uniformly from 0 .. 2^31 - 1


def dropout(x: torch.Tensor, p: float, training: bool = True, inplace: bool = False) -> torch.Tensor:
    """``F.dropout(x, p, training, inplace)``: each element zeroed with probability ``p`` (to within
    ``2^-32``), the others scaled by ``1 / (1 - p)``; the mask drawn as the module docstring says on the CPU."""
    _check(p)
    if not training or p == 0.0:
        return x
    keep = _draw(x, p)
    if keep is None:
        return F.dropout(x, p, training, inplace)
    mask = keep.to(x.dtype).mul_(1.0 / (1.0 - p))  # saved for backward: one multiply there
    return x.mul_(mask) if inplace else x * mask


def relu_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``dropout(F.relu(x), p, training)`` saving one mask for the backward pass (the elements that are positive
    and kept, scaled), not ReLU's output as well: one tensor of ``x``'s size less held until the backward pass, at
    the same speed (``benchmarks/train_kernels.py``). It draws the same mask as
    :func:`dropout` for the same generator state, so the two ways give equal outputs and gradients (tested,
    infinities and NaN included)."""
    _check(p)
    if not training or p == 0.0:
        return F.relu(x)
    keep = _draw(x, p)
    if keep is None:
        return F.dropout(F.relu(x), p, training)
    keep.logical_and_(torch.le(x, 0).logical_not_())  # where ReLU passes the gradient (NaN included, as PyTorch's)
    return _ReluMasked.apply(x, keep.to(x.dtype).mul_(1.0 / (1.0 - p)))


def _check(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")


def _draw(x: torch.Tensor, p: float) -> torch.Tensor | None:
    """The boolean keep-mask for ``x``, or ``None`` where PyTorch's dropout should run: off the CPU, for a
    non-float ``x``, and for ``p`` within ``2^-32`` of 1 (an int32 comparison with ``2^31`` would overflow)."""
    threshold = round(p * _BITS)
    if x.device.type != "cpu" or threshold >= _BITS or not x.is_floating_point():
        return None
    return torch.empty(x.shape, dtype=torch.int32).random_() >= threshold


class _ReluMasked(torch.autograd.Function):
    """``F.relu(x) * mask`` where ``mask`` is 0 wherever ReLU's gradient is: saves ``mask`` alone."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(mask)
        return F.relu(x).mul_(mask)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (mask,) = ctx.saved_tensors
        return grad * mask, None


class Dropout(nn.Dropout):
    """:class:`torch.nn.Dropout` drawing its mask with :func:`dropout` (same arguments, same state)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 (nn.Dropout's name)
        return dropout(input, self.p, self.training, self.inplace)
