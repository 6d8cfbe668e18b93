"""Masked, label-smoothed cross-entropy and a validation-loss evaluator.

The loss returns a *sum* and a token count instead of a mean, so that means over several batches (or
over a logging window) are exact token-weighted means rather than means of batch means.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812

from attnlab.core.types import Batch, LabelBatch
from attnlab.models.base import EncoderDecoder

PAD_ID = 0

__all__ = ["PAD_ID", "classification_loss", "loss_evaluator", "masked_cross_entropy", "mean_loss",
           "teacher_forced_loss", "token_loss"]


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor, *, label_smoothing: float = 0.0,
                         pad_id: int = PAD_ID) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the non-padding target tokens, and how many there are.

    With smoothing ``eps`` the per-token loss is ``(1 - eps) * nll + eps * mean_v(-log p_v)`` over all
    ``V`` classes (Szegedy et al. 2016, as in ``F.cross_entropy(label_smoothing=eps)``). Positions whose
    target is ``pad_id`` contribute nothing, neither to the sum nor to the count. Computed in float32
    whatever the logits' dtype (bf16 autocast).

    Args:
        logits: ``(B, Tt, V)`` unnormalized scores.
        target: ``(B, Tt)`` token ids; ``pad_id`` marks padding.

    Returns:
        ``(loss_sum, num_tokens)``: a float32 scalar tensor (differentiable) and a Python int;
        ``loss_sum / num_tokens`` is the token-mean loss.
    """
    if logits.shape[:-1] != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match target {tuple(target.shape)}: "
                         f"expected (B, Tt, V) and (B, Tt)")
    log_probs = F.log_softmax(logits.float(), dim=-1)  # (B, Tt, V)
    mask = target != pad_id  # (B, Tt)
    safe_target = target.masked_fill(~mask, 0)
    nll = -log_probs.gather(-1, safe_target.unsqueeze(-1)).squeeze(-1)  # (B, Tt)
    if label_smoothing > 0.0:
        smooth = -log_probs.mean(dim=-1)  # (B, Tt)
        per_token = (1.0 - label_smoothing) * nll + label_smoothing * smooth
    else:
        per_token = nll
    loss_sum = per_token.masked_fill(~mask, 0.0).sum()
    return loss_sum, int(mask.sum())


def teacher_forced_loss(model: EncoderDecoder, batch: Batch, *,
                        label_smoothing: float = 0.0) -> tuple[torch.Tensor, int]:
    """The encoder-decoder loss: logits of ``<bos> y1 .. yn`` scored against ``y1 .. yn <eos>``, summed over tokens."""
    logits = model(batch.src, batch.src_lens, batch.tgt_in).logits  # (B, Tt, V)
    return masked_cross_entropy(logits, batch.tgt_out, label_smoothing=label_smoothing)


def classification_loss(model: torch.nn.Module, batch: LabelBatch, *,
                        label_smoothing: float = 0.0) -> tuple[torch.Tensor, int]:
    """Cross-entropy of a classifier's ``logits`` ``(B, C)`` against ``batch.labels``, summed over the B examples
    (float32 whatever the autocast dtype)."""
    logits = model(batch.tokens, batch.lengths).logits  # (B, C)
    loss_sum = F.cross_entropy(logits.float(), batch.labels, reduction="sum", label_smoothing=label_smoothing)
    return loss_sum, int(batch.labels.numel())


LossFn = Callable[[torch.nn.Module, Any], tuple[torch.Tensor, int]]


@torch.no_grad()
def mean_loss(model: torch.nn.Module, batches: Iterable[Any], loss: LossFn, *,
              device: torch.device | str = "cpu") -> float:
    """``sum(loss_sum) / sum(count)`` of ``loss`` over ``batches`` with ``model`` in eval mode; ``nan`` if empty."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for batch in batches:
            loss_sum, n = loss(model, batch.to(device))
            total += float(loss_sum)
            count += n
    finally:
        model.train(was_training)
    return total / count if count else math.nan


def token_loss(model: EncoderDecoder, batches: Iterable[Batch], *, device: torch.device | str = "cpu",
               label_smoothing: float = 0.0) -> float:
    """Token-weighted mean teacher-forced cross-entropy of ``model`` (in eval mode) over ``batches``."""
    return mean_loss(model, batches, functools.partial(teacher_forced_loss, label_smoothing=label_smoothing),
                     device=device)


def loss_evaluator(batches: Iterable[Any], *, prefix: str = "val_", device: torch.device | str = "cpu",
                   loss: LossFn | None = None,
                   perplexity: bool = True) -> Callable[[torch.nn.Module], dict[str, float]]:
    """An ``evaluate`` function for the trainer: ``{prefix+'loss'}`` (and ``prefix+'ppl'``) on fixed batches.

    The batches are materialized once, so every evaluation sees exactly the same data. ``loss`` defaults to the
    teacher-forced loss without smoothing.
    """
    fixed = list(batches)
    loss = loss or teacher_forced_loss

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        value = mean_loss(model, fixed, loss, device=device)
        out = {f"{prefix}loss": value}
        if perplexity:  # exp overflows beyond ~709
            out[f"{prefix}ppl"] = math.exp(min(value, 700.0)) if not math.isnan(value) else math.nan
        return out

    return evaluate
