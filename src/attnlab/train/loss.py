"""Masked, label-smoothed cross-entropy and a validation-loss evaluator.

The loss returns a *sum* and a token count instead of a mean, so that means over several batches (or
over a logging window) are exact token-weighted means rather than means of batch means.

Memory: the logits of a 4,096-token batch over an 8k vocabulary are 32M floats, and the plain path
(:func:`masked_cross_entropy`) holds several tensors of that size at once (logits, a float32 copy under bf16
autocast, the log-probabilities saved for backward, their gradients). :func:`linear_cross_entropy` takes the
decoder states instead and projects only the non-padding positions, ``chunk_tokens`` rows at a time: one
chunk's logits exist at any moment. :func:`teacher_forced_loss` uses it for every model with an
:meth:`~attnlab.models.base.EncoderDecoder.output_projection`. A pointer-generator's output mixes in a copy
distribution over each row's source, so it is no linear map: :func:`sliced_cross_entropy` computes it a slice of
target positions at a time under activation checkpointing instead, and recomputes each slice in the backward pass.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch.autograd.function import FunctionCtx, once_differentiable
from torch.utils.checkpoint import checkpoint

from attnlab.attention import native
from attnlab.core.types import Batch, LabelBatch
from attnlab.models.base import EncoderDecoder

PAD_ID = 0
LOSS_CHUNK_TOKENS = 256
"""Target tokens per chunk of :func:`linear_cross_entropy`, chosen by measurement (``benchmarks/
train_throughput.py --loss-chunk-tokens``; Multi30k, V = 7.8k, Transformer-tiny, 1 CPU thread, fp32/bf16):
training speed relative to ``nn.Transformer`` was 1.14/1.17 at 128, 1.10-1.14/1.15-1.20 at 256, 1.09/1.12 at
512 and 1,024, 1.09/1.10 at 2,048, and 0.98-1.02/0.98-1.04 with all logits at once. A 256 x 7.8k float32
chunk is 8 MiB."""

__all__ = ["LOSS_CHUNK_TOKENS", "PAD_ID", "adversarial_loss", "classification_loss", "linear_cross_entropy",
           "loss_evaluator", "masked_cross_entropy", "mean_loss", "sliced_cross_entropy", "teacher_forced_loss",
           "token_loss"]


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


def _accumulate(dz_c: torch.Tensor, h: torch.Tensor, w_grad: torch.Tensor, grad_h: torch.Tensor | None,
                grad_w: torch.Tensor | None, grad_b: torch.Tensor | None, start: int, low: int, chunk_tokens: int,
                skip: int, grad_dtype: torch.dtype, acc: torch.dtype) -> None:
    """Add one chunk's share to the gradients of :class:`_LinearCrossEntropy` from ``dz_c``, ``d loss / d logits``
    ``(C, V)`` in ``grad_dtype`` with its first ``skip`` rows zero."""
    if grad_h is not None:
        grad_h[start:low + chunk_tokens] = (dz_c @ w_grad)[skip:]  # (C - skip, D)
    if grad_w is not None:
        grad_w += (dz_c.T @ h.to(grad_dtype)).to(acc)  # (V, D)
    if grad_b is not None:
        grad_b += dz_c.sum(dim=0, dtype=acc)  # (V,)


class _LinearCrossEntropy(torch.autograd.Function):
    """``sum_i loss(hidden_i @ weight.T + bias, target_i)`` over ``N`` rows, a chunk of rows at a time.

    The gradients are computed in ``forward``, chunk by chunk, while each chunk's logits exist anyway; only they
    are kept, ``(N, D)`` and ``(V, D)``, never the ``(N, V)`` logits, and ``backward`` scales them by the
    incoming scalar gradient. (Recomputing the logits in ``backward`` instead costs one more ``(C, D) x (D, V)``
    matmul per chunk: the loss of 4k tokens over 7.8k classes took 5-15% longer in float32 and 30% in bf16 on
    one CPU thread.) Without ``needs_grad`` (validation) only the loss is computed.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                target: torch.Tensor, label_smoothing: float, chunk_tokens: int, compute_dtype: torch.dtype,
                needs_grad: tuple[bool, bool, bool]) -> torch.Tensor:
        """``hidden`` ``(N, D)``, ``weight`` ``(V, D)``, ``bias`` ``(V,)`` or ``None``, ``target`` ``(N,)``."""
        eps, vocab = label_smoothing, weight.shape[0]
        acc = torch.promote_types(compute_dtype, torch.float32)  # float32 (float64 for float64 inputs)
        # The gradients are rounded before GradScaler's scale reaches them: float16 would underflow.
        grad_dtype = acc if compute_dtype == torch.float16 else compute_dtype
        need_h, need_w, need_b = needs_grad
        w = weight.to(compute_dtype)  # (V, D)
        w_grad = w.to(grad_dtype)  # (V, D), w itself unless float16
        b = None if bias is None else bias.to(compute_dtype)  # (V,)
        loss_sum = torch.zeros((), dtype=acc, device=hidden.device)
        grad_h = torch.zeros_like(hidden) if need_h else None  # (N, D)
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None  # (V, D)
        grad_b = torch.zeros(vocab, dtype=acc, device=weight.device) if need_b else None  # (V,)
        num_rows = hidden.shape[0]
        with torch.autocast(hidden.device.type, enabled=False):  # the dtypes are explicit here
            for start in range(0, num_rows, chunk_tokens):
                # The last chunk overlaps the one before it and skips the rows done there, so that every chunk
                # has the same shape: oneDNN (bf16 on CPU) caches and keeps a kernel per matmul shape.
                low = max(min(start, num_rows - chunk_tokens), 0)
                skip = start - low
                h = hidden[low:low + chunk_tokens].to(compute_dtype)  # (C, D)
                t = target[low:low + chunk_tokens]  # (C,)
                logits = F.linear(h, w, b)  # (C, V)
                fused = native.cross_entropy_rows(logits, t, label_smoothing=eps, skip=skip,
                                                  grad_dtype=grad_dtype if any(needs_grad) else None)
                if fused is not None:  # one pass per row (attention/kernels.c): the same sums, less memory traffic
                    loss_sum += fused[0]
                    if fused[1] is not None:
                        _accumulate(fused[1], h, w_grad, grad_h, grad_w, grad_b, start, low, chunk_tokens, skip,
                                    grad_dtype, acc)
                    continue
                logits = logits.to(acc)
                lse = torch.logsumexp(logits, dim=-1)  # (C,)
                # (1 - eps) * (lse - z_t) + eps * mean_v(lse - z_v), masked_cross_entropy's per-token loss.
                z_t = logits.gather(-1, t[:, None]).squeeze(-1)  # (C,)
                loss_sum += (lse - (1.0 - eps) * z_t - eps * logits.mean(dim=-1))[skip:].sum()
                if not any(needs_grad):
                    continue
                # d loss / d z = softmax(z) - (1 - eps) * onehot(t) - eps / V, written over the logits.
                dz = logits.sub_(lse[:, None]).exp_().sub_(eps / vocab)  # (C, V)
                dz[torch.arange(t.shape[0], device=t.device), t] -= 1.0 - eps
                dz[:skip] = 0.0
                # dz in grad_dtype (C, V): as autocast's linear backward sees it (bf16)
                _accumulate(dz.to(grad_dtype), h, w_grad, grad_h, grad_w, grad_b, start, low, chunk_tokens, skip,
                            grad_dtype, acc)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        return loss_sum

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_loss: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grads = [None if g is None else (g * grad_loss).to(dtype)
                 for g, dtype in zip(ctx.saved_tensors, ctx.dtypes, strict=True)]
        return (*grads, None, None, None, None, None)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, *,
                         bias: torch.Tensor | None = None, label_smoothing: float = 0.0, pad_id: int = PAD_ID,
                         chunk_tokens: int = LOSS_CHUNK_TOKENS) -> tuple[torch.Tensor, int]:
    """:func:`masked_cross_entropy` of ``F.linear(hidden, weight, bias)``, without ever holding those logits.

    Only the non-padding positions are projected, ``chunk_tokens`` of them at a time; each chunk's logits and
    their gradients are dropped before the next chunk (see :class:`_LinearCrossEntropy`). Under autocast the
    projection runs in the autocast dtype and the softmax in float32, as on the logits path. Loss and gradients
    equal that path's up to float rounding (tests: float64 gradcheck; float32 ``rtol=1e-5``; bf16 autocast
    within bf16 rounding of the gradients).

    Args:
        hidden: ``(B, Tt, D)`` the states the logits are projected from.
        weight: ``(V, D)`` the output projection (may be tied to an embedding); ``bias``: ``(V,)`` or ``None``.
        target: ``(B, Tt)`` token ids; ``pad_id`` marks padding.

    Returns:
        ``(loss_sum, num_tokens)`` as :func:`masked_cross_entropy` (the sum is float64 for float64 inputs).
    """
    if hidden.shape[:-1] != target.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} does not match target {tuple(target.shape)}: "
                         f"expected (B, Tt, D) and (B, Tt)")
    if chunk_tokens < 1:
        raise ValueError(f"linear_cross_entropy: chunk_tokens must be >= 1, got {chunk_tokens}")
    mask = target != pad_id  # (B, Tt)
    rows, rows_target = hidden[mask], target[mask]  # (N, D), (N,): padding is never projected
    device = hidden.device.type
    if torch.is_autocast_enabled(device) and torch.float64 not in (hidden.dtype, weight.dtype):
        compute_dtype = torch.get_autocast_dtype(device)
    else:
        compute_dtype = torch.promote_types(hidden.dtype, weight.dtype)
    grad = torch.is_grad_enabled()
    needs_grad = (grad and rows.requires_grad, grad and weight.requires_grad,
                  grad and bias is not None and bias.requires_grad)
    loss_sum = _LinearCrossEntropy.apply(rows, weight, bias, rows_target, label_smoothing, chunk_tokens,
                                         compute_dtype, needs_grad)
    return loss_sum, rows.shape[0]


def sliced_cross_entropy(project: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor,
                         target: torch.Tensor, *, label_smoothing: float = 0.0, pad_id: int = PAD_ID,
                         chunk_tokens: int = LOSS_CHUNK_TOKENS) -> tuple[torch.Tensor, int]:
    """:func:`masked_cross_entropy` of ``project(hidden)``, a slice of target positions at a time.

    ``project`` maps ``hidden[:, a:b]`` ``(B, b - a, D)`` to those positions' logits ``(B, b - a, V)`` (a
    pointer-generator: log-probabilities). Each slice holds about ``chunk_tokens`` positions (``B`` rows times
    ``max(1, chunk_tokens // B)`` steps); with gradients on, each runs under activation checkpointing
    (``torch.utils.checkpoint``), so only one slice's logits and the tensors ``project`` saves exist at a time,
    forward or backward, for the price of computing ``project`` twice. Slices whose targets are all padding are
    skipped. ``project`` must be deterministic (no dropout): the backward pass recomputes it. Loss and gradients
    equal the whole-tensor path's up to float rounding (tests: float32 ``rtol=1e-5``, and under bf16 autocast).

    Returns:
        ``(loss_sum, num_tokens)`` as :func:`masked_cross_entropy`.
    """
    if hidden.shape[:-1] != target.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} does not match target {tuple(target.shape)}: "
                         f"expected (B, Tt, D) and (B, Tt)")
    if chunk_tokens < 1:
        raise ValueError(f"sliced_cross_entropy: chunk_tokens must be >= 1, got {chunk_tokens}")

    def slice_loss(part: torch.Tensor, part_target: torch.Tensor) -> torch.Tensor:
        return masked_cross_entropy(project(part), part_target, label_smoothing=label_smoothing, pad_id=pad_id)[0]

    steps = max(1, chunk_tokens // max(1, hidden.shape[0]))
    total: torch.Tensor | None = None
    for start in range(0, hidden.shape[1], steps):
        part_target = target[:, start:start + steps]  # (B, t)
        if not bool((part_target != pad_id).any()):
            continue
        part = hidden[:, start:start + steps]  # (B, t, D)
        if torch.is_grad_enabled():
            loss = checkpoint(slice_loss, part, part_target, use_reentrant=False)
        else:
            loss = slice_loss(part, part_target)
        total = loss if total is None else total + loss
    if total is None:  # every target is padding
        total = hidden.new_zeros((), dtype=torch.promote_types(hidden.dtype, torch.float32)) + 0.0 * hidden.sum()
    return total, int((target != pad_id).sum())


def _core(model: torch.nn.Module) -> torch.nn.Module:
    # DistributedDataParallel(model): the wrapper must be called (it syncs the gradients), the model asked.
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def _output_projection(model: torch.nn.Module) -> torch.nn.Linear | None:
    core = _core(model)
    return core.output_projection() if isinstance(core, EncoderDecoder) else None


def teacher_forced_loss(model: EncoderDecoder, batch: Batch, *, label_smoothing: float = 0.0,
                        chunk_tokens: int | None = LOSS_CHUNK_TOKENS) -> tuple[torch.Tensor, int]:
    """The encoder-decoder loss: logits of ``<bos> y1 .. yn`` scored against ``y1 .. yn <eos>``, summed over tokens.

    A model with an :meth:`~attnlab.models.base.EncoderDecoder.output_projection` returns its decoder states
    (``project=False``) and :func:`linear_cross_entropy` projects them in chunks of ``chunk_tokens``; a model with
    a :meth:`~attnlab.models.base.EncoderDecoder.sliced_output` (the pointer-generator) goes through
    :func:`sliced_cross_entropy`; any other model, or ``chunk_tokens=None``, through its full logits and
    :func:`masked_cross_entropy`.
    """
    core = _core(model)
    if chunk_tokens is not None and isinstance(core, EncoderDecoder) and core.sliced_output():
        out = model(batch.src, batch.src_lens, batch.tgt_in, project=False)
        return sliced_cross_entropy(out.project, out.hidden, batch.tgt_out, label_smoothing=label_smoothing,
                                    chunk_tokens=chunk_tokens)
    head = _output_projection(model) if chunk_tokens is not None else None
    if head is None:
        logits = model(batch.src, batch.src_lens, batch.tgt_in).logits  # (B, Tt, V)
        return masked_cross_entropy(logits, batch.tgt_out, label_smoothing=label_smoothing)
    hidden = model(batch.src, batch.src_lens, batch.tgt_in, project=False).hidden  # (B, Tt, D)
    return linear_cross_entropy(hidden, head.weight, batch.tgt_out, bias=head.bias, label_smoothing=label_smoothing,
                                chunk_tokens=chunk_tokens)


def classification_loss(model: torch.nn.Module, batch: LabelBatch, *,
                        label_smoothing: float = 0.0) -> tuple[torch.Tensor, int]:
    """Cross-entropy of a classifier's ``logits`` ``(B, C)`` against ``batch.labels``, summed over the B examples
    (float32 whatever the autocast dtype)."""
    logits = model(batch.tokens, batch.valid_lens).logits  # (B, C)
    loss_sum = F.cross_entropy(logits.float(), batch.labels, reduction="sum", label_smoothing=label_smoothing)
    return loss_sum, int(batch.labels.numel())


LossFn = Callable[[torch.nn.Module, Any], tuple[torch.Tensor, int]]


def adversarial_loss(model: torch.nn.Module, batch: Any, *, loss: LossFn, eps: float) -> tuple[torch.Tensor, int]:
    """``loss`` of ``batch`` plus the same loss with the embeddings moved adversarially (fast gradient method).

    Adversarial training for text (Miyato et al. 2017, after Goodfellow et al. 2015): words are discrete, so the
    perturbation goes on the embedding vectors. For each example, ``r = eps * g / ||g||_2``, where ``g`` is the
    gradient of its loss with respect to its ``(T, E)`` embedding output (padding rows get zero gradient), and
    the model is trained on ``loss(x) + loss(x + r)``. ``r`` is a constant (no gradient flows through the
    perturbation itself). Dropout draws new masks for the second pass. Cost: one more forward pass and one
    backward pass down to the embeddings, about 2.5x a plain step.

    ``model.embedding`` must be the module whose output is perturbed (the text classifiers' word table).
    Returns ``(clean_sum + adversarial_sum, count)``.
    """
    ddp = isinstance(model, torch.nn.parallel.DistributedDataParallel)
    core = model.module if ddp else model
    embedding = getattr(core, "embedding", None)
    if not isinstance(embedding, torch.nn.Module):
        raise TypeError(f"adversarial training perturbs model.embedding; {type(core).__name__} has none")
    outputs: list[torch.Tensor] = []
    handle = embedding.register_forward_hook(lambda _m, _i, out: outputs.append(out))
    # Under DistributedDataParallel only the second pass may prepare the gradient reduction (one backward
    # follows both passes): the first runs outside it.
    try:
        with model.no_sync() if ddp else contextlib.nullcontext():
            clean, count = loss(model, batch)
    finally:
        handle.remove()
    if len(outputs) != 1:
        raise RuntimeError(f"the model used its embedding {len(outputs)} times in one forward pass; expected once")
    (grad,) = torch.autograd.grad(clean, outputs[0], retain_graph=True)  # (B, T, E), no graph of its own
    norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)  # (B,)
    delta = eps * grad / norm.view(-1, *([1] * (grad.dim() - 1)))  # (B, T, E)
    handle = embedding.register_forward_hook(lambda _m, _i, out: out + delta.to(out.dtype))
    try:
        adversarial, _ = loss(model, batch)
    finally:
        handle.remove()
    return clean + adversarial, count


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
