"""Pure attention math: masked softmax and the explicit and fused scaled dot-product paths.

Every function here is stateless; modules in this package own parameters and call into these.
Shapes follow the legend in :mod:`attnlab.core.types`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from attnlab.attention import masks as M

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def masked_softmax(scores: torch.Tensor, valid_lens: torch.Tensor | None = None,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax over the last dim that gives masked positions exactly 0.

    Args:
        scores: ``(B, .., Tq, Tk)`` floating scores.
        valid_lens: ``(B,)`` keys per row or ``(B, Tq)`` keys per query (integers in ``[0, Tk]``).
        mask: boolean, broadcastable to ``scores``; ``True`` = may attend.

    Returns:
        Weights with the shape of ``scores``. A row with no allowed position is all zeros; its
        gradient is zero too (finite), in every floating dtype. Masked entries are filled with the
        dtype's minimum -- never a magic ``-1e9``, which overflows in fp16.
    """
    if not isinstance(scores, torch.Tensor) or not scores.dtype.is_floating_point:
        got = scores.dtype if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise TypeError(f"scores: expected a floating-point tensor, got {got}")
    if scores.dim() < 2:
        raise ValueError(f"scores: expected at least 2 dims (.., Tq, Tk), got shape {tuple(scores.shape)}")
    combined = build_mask(tuple(scores.shape), valid_lens=valid_lens, mask=mask, device=scores.device)
    return softmax_with_mask(scores, combined)


def build_mask(scores_shape: tuple[int, ...], *, valid_lens: torch.Tensor | None = None,
               mask: torch.Tensor | None = None, is_causal: bool = False,
               device: torch.device | None = None) -> torch.Tensor | None:
    """Validate and AND together the ways of restricting attention for scores of ``scores_shape``.

    Returns a boolean mask broadcastable to ``scores_shape`` (``True`` = may attend) or ``None``.
    """
    num_queries, num_keys = scores_shape[-2], scores_shape[-1]
    parts: list[torch.Tensor | None] = []
    if valid_lens is not None:
        M.check_valid_lens(valid_lens, scores_shape[0], num_queries, num_keys)
        parts.append(M.lengths_to_mask(valid_lens, num_keys, len(scores_shape)))
    if mask is not None:
        M.check_mask(mask, scores_shape)
        parts.append(mask)
    if is_causal:
        parts.append(M.causal_mask(num_queries, num_keys, device=device))
    return M.combine(*parts)


def fill_masked(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Replace disallowed scores with the dtype's minimum (finite, so no ``inf - inf`` NaN)."""
    if mask is None:
        return scores
    return scores.masked_fill(~mask, torch.finfo(scores.dtype).min)


def softmax_with_mask(scores: torch.Tensor, mask: torch.Tensor | None, *, inplace: bool = False) -> torch.Tensor:
    """Softmax of ``scores`` under an already-built boolean ``mask``; fully masked rows become zeros.

    Half-precision scores are normalized in float32 and cast back, so bf16/fp16 rows still sum to 1
    within their dtype's resolution.

    ``inplace=True`` (float32/float64 only; otherwise ignored) overwrites ``scores`` with the weights and
    returns it. For inference on long sequences this is much faster: a fresh score-sized buffer is mapped
    from the system and page-faulted in on every call (measured 18 ms vs 3.7 ms for a (4, 8, 512, 512)
    softmax on one thread). The caller must own ``scores`` and not need it for autograd.
    """
    if inplace and scores.dtype not in _LOW_PRECISION:
        blocked = None if mask is None else ~mask
        if blocked is not None:
            scores.masked_fill_(blocked, torch.finfo(scores.dtype).min)
        # The out= variant of the softmax kernel, writing over its input (as PyTorch's own fused inference
        # attention does); torch.softmax has no out= argument.
        torch.ops.aten._softmax.out(scores, -1, False, out=scores)
        return scores if blocked is None else scores.masked_fill_(blocked, 0.0)
    filled = fill_masked(scores, mask)
    if scores.dtype in _LOW_PRECISION:
        weights = torch.softmax(filled, dim=-1, dtype=torch.float32).to(scores.dtype)
    else:
        weights = torch.softmax(filled, dim=-1)
    if mask is None:
        return weights
    # A fully masked row was softmaxed over equal minima (uniform); zero it and every masked entry.
    return weights.masked_fill(~mask, 0.0)


def zero_unreachable(keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None,
                     key_dim: int = -2) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero keys/values that no query may attend to, so NaN/inf padding cannot reach any output.

    (``0 * nan`` is ``nan``: a zero weight alone does not protect the weighted sum.) ``mask`` is
    broadcastable to ``(.., Tq, Tk)`` scores; ``keys``/``values`` are ``(.., Tk, D)``.
    """
    if mask is None:
        return keys, values
    reachable = mask.any(dim=-2)  # (.., Tk): some query may attend to this key
    while reachable.dim() < keys.dim() - 1:
        reachable = reachable.unsqueeze(0)
    if bool(reachable.all()):
        return keys, values
    keep = reachable.unsqueeze(-1)  # (.., Tk, 1)
    return keys.masked_fill(~keep, 0.0), values.masked_fill(~keep, 0.0)


def zero_unused_inputs(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Zero the input rows that no output depends on, before they are projected.

    Those are keys/values that no query may attend to and queries that may attend to no key (their output is the
    bias alone). :func:`zero_unreachable` keeps NaN/inf there out of the outputs, but not out of the projection's
    weight gradient ``dW = dYᵀ X``, where a padded row's zero ``dY`` meets its NaN input (``0 * nan`` is ``nan``).

    Args:
        query: ``(B, Tq, D)``; key: ``(B, Tk, Dk)``; value: ``(B, Tk, Dv)``. Self-attention passes one tensor as
            all three: a row is then kept if it is used as a query or as a key.
        mask: boolean, broadcastable to ``(B, H, Tq, Tk)`` scores, ``True`` = may attend.

    Returns:
        ``(query, key, value)``; an input with nothing to zero is returned as is, so ``key is value`` still holds.
    """
    if mask is None:
        return query, key, value
    mask = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))  # (B|1, H|1, Tq|1, Tk|1)
    live = mask.any(dim=-1).any(dim=1)  # (B|1, Tq|1): the query may attend some key in some head
    reachable = mask.any(dim=-2).any(dim=1)  # (B|1, Tk|1): some query may attend the key in some head
    if query is key:
        query = key = _zero_rows(query, live | reachable)
    else:
        query, key = _zero_rows(query, live), _zero_rows(key, reachable)
    return query, key, key if value is key else _zero_rows(value, reachable)


def _zero_rows(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``x`` ``(B, T, D)`` with the rows where ``keep`` ``(B|1, T|1)`` is False set to 0 (``torch.where``: NaN-safe)."""
    if bool(keep.all()):
        return x
    return torch.where(keep.unsqueeze(-1), x, 0.0)  # (B, T, D)


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, *,
                       dropout_p: float = 0.0, training: bool = False, scale: float | None = None,
                       tracer=None, keys_zeroed: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention written out step by step (Vaswani et al., 2017, eq. 1).

    Args:
        q: ``(B, H, Tq, Dh)``; k: ``(B, H, Tk, Dh)``; v: ``(B, H, Tk, Dv)``.
        mask: boolean broadcastable to ``(B, H, Tq, Tk)``, ``True`` = may attend.
        tracer: an active :class:`attnlab.attention.trace.Trace` to record each step, or ``None``.
        keys_zeroed: the keys and values no query may reach are zero already (as :func:`fused_attention`).

    Returns:
        ``(context (B, H, Tq, Dv), weights (B, H, Tq, Tk))``; weights are before dropout.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if not keys_zeroed:
        k, v = zero_unreachable(k, v, mask)
    # Kᵀ as a transposed view of a contiguous (B, H, Tk, Dh) K: the batched matmul then reads it with BLAS's
    # transpose flag. Transposing a head-split view instead makes matmul copy K element by element into
    # (B, H, Dh, Tk) order, a strided copy that cost 2-3% of a 128-token forward.
    kt = k.contiguous().transpose(-2, -1)  # (B, H, Dh, Tk)
    # Nothing else holds the fresh scores and autograd does not need them: softmax over them in place.
    inplace = tracer is None and not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad))
    if inplace:
        # Scale Q while copying it into the contiguous (B, H, Tq, Dh) layout that the batched matmul needs: one
        # pass over Q. ``q * scale`` keeps a head-split view's (B, Tq, H, Dh) memory order, so matmul would copy
        # it a second time.
        scaled = torch.empty(q.shape, dtype=q.dtype, device=q.device)  # (B, H, Tq, Dh)
        scores = torch.mul(q, scale, out=scaled) @ kt  # (B, H, Tq, Tk)
    elif tracer is None:
        # Scale Q (Tq x Dh), not the scores (Tq x Tk): one less score-sized buffer to allocate and fill.
        scores = (q * scale) @ kt  # (B, H, Tq, Tk)
    else:  # the two steps separately, so a learner sees both
        scores = q @ kt  # (B, H, Tq, Tk)
        tracer.record("scores", scores)
        scores = scores * scale  # (B, H, Tq, Tk)
        tracer.record("scaled_scores", scores)
        if mask is not None:
            tracer.record("masked_scores", fill_masked(scores, mask))
    weights = softmax_with_mask(scores, mask, inplace=inplace)  # (B, H, Tq, Tk)
    if tracer is not None:
        tracer.record("weights", weights)
    # F.dropout, not attnlab.attention.dropout: the fused kernel (SDPA's math backend on the CPU) draws this same mask
    attn = F.dropout(weights, p=dropout_p, training=True) if training and dropout_p > 0 else weights
    context = attn @ v  # (B, H, Tq, Dv)
    return context, weights


def step_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`explicit_attention`'s context for the few queries of one decoding step, in five plain operations.

    For inference only (no autograd, dropout, trace or weights): the scores are softmaxed in place. ``q``
    ``(B, H, Tq, Dh)`` (one query, or one per beam), ``k``/``v`` ``(B, H, Tk, Dh)`` (views of a cache's buffers
    are read where they lie: their (Tk, Dh) matrices are contiguous), ``mask`` boolean broadcastable to
    ``(B, H, Tq, Tk)``. The caller guarantees what the general paths check: every query may attend some key, and
    the keys and values no query may reach are zero (:meth:`~attnlab.attention.cache.KVCache.padding_mask`).

    Returns:
        ``(B, H, Tq, Dh)`` context.
    """
    scores = torch.matmul(q * (1.0 / math.sqrt(q.shape[-1])), k.transpose(-2, -1))  # (B, H, Tq, Tk)
    if mask is not None:
        scores.masked_fill_(mask.logical_not(), float("-inf"))
    torch.ops.aten._softmax.out(scores, -1, False, out=scores)  # in place, as softmax_with_mask(inplace=True)
    return torch.matmul(scores, v)


def fused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, *,
                    is_causal: bool = False, dropout_p: float = 0.0, training: bool = False,
                    keys_zeroed: bool = False) -> torch.Tensor:
    """The fast path: ``F.scaled_dot_product_attention`` with attnlab's semantics.

    ``is_causal`` is passed to the kernel only when no other mask is given and ``Tq == Tk`` (SDPA aligns
    its causal mask top-left, which is wrong for cached decoding). Rows with no allowed key are given a
    harmless full mask for the kernel (avoiding NaN forward and backward) and zeroed afterwards, so the
    result equals :func:`explicit_attention`'s context. ``keys_zeroed``: the caller has already zeroed the keys and
    values no query may reach (:meth:`~attnlab.attention.cache.KVCache.without_unreachable`), so they are not
    zeroed again.

    Returns:
        ``(B, H, Tq, Dv)`` context.
    """
    p = dropout_p if training else 0.0
    if mask is None:
        return _sdpa(q, k, v, dropout_p=p, is_causal=is_causal)
    if not keys_zeroed:
        k, v = zero_unreachable(k, v, mask)
    row_ok = mask.any(dim=-1, keepdim=True)  # (.., Tq, 1)
    if bool(row_ok.all()):
        return _sdpa(q, k, v, attn_mask=mask, dropout_p=p)
    context = _sdpa(q, k, v, attn_mask=mask | ~row_ok, dropout_p=p)
    return context.masked_fill(~row_ok, 0.0)


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs: object) -> torch.Tensor:
    """``F.scaled_dot_product_attention``; on the CPU with bfloat16/float16 inputs and autograd recording, in float32.

    PyTorch's CPU flash-attention backward is slow in bfloat16 at training shapes: forward and backward of
    ``(107, 4, 19, 32)`` heads with key padding took 27 ms against 6 ms in float32, casts included, on one thread
    (``benchmarks/train_kernels.py``). Without autograd (decoding) bfloat16 is as fast, and stays. The kernel
    saves its float32 inputs for the backward pass; :class:`_UpcastSaved` keeps the bfloat16 originals instead
    and casts them again there (the same values: widening is exact), which halves what the three of them hold
    until the backward pass.
    """
    low = q.dtype in _LOW_PRECISION
    if low and q.device.type == "cpu" and torch.is_grad_enabled() and (
            q.requires_grad or k.requires_grad or v.requires_grad):
        wide = q.float(), k.float(), v.float()
        with torch.autocast("cpu", enabled=False), _UpcastSaved((q, k, v), wide):  # autocast would cast back
            return F.scaled_dot_product_attention(*wide, **kwargs).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, **kwargs)


class _UpcastSaved(torch.autograd.graph.saved_tensors_hooks):
    """Saved-tensor hooks under which a widened copy (``wide[i] = narrow[i].float()``) that autograd saves is
    stored as its narrow original and widened again when the backward pass unpacks it; every other saved tensor
    is stored as it is (a tensor is matched by identity, so an equal but distinct tensor is never swapped)."""

    def __init__(self, narrow: tuple[torch.Tensor, ...], wide: tuple[torch.Tensor, ...]) -> None:
        ids = {id(w): n for n, w in zip(narrow, wide, strict=True)}

        def pack(t: torch.Tensor) -> object:
            n = ids.get(id(t))
            return (n,) if n is not None else t

        def unpack(packed: object) -> torch.Tensor:
            return packed[0].float() if isinstance(packed, tuple) else packed

        super().__init__(pack, unpack)
