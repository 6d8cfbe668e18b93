"""Mask construction and validation. One convention everywhere: boolean, ``True`` = may attend.

Masks are built at the boundary from the three ways a caller can restrict attention -- valid lengths,
an explicit boolean mask and causality -- and combined with logical AND. APIs with the opposite
convention (``torch.nn.MultiheadAttention``'s ``key_padding_mask`` and boolean ``attn_mask``, where
``True`` means *blocked*) are converted by :func:`from_torch_masks`.
"""

from __future__ import annotations

import torch


def check_valid_lens(valid_lens: torch.Tensor, batch: int, num_queries: int, num_keys: int) -> torch.Tensor:
    """Validate ``valid_lens`` of shape ``(B,)`` (per row) or ``(B, Tq)`` (per query); values in ``[0, Tk]``."""
    if not isinstance(valid_lens, torch.Tensor):
        raise TypeError(f"valid_lens: expected a torch.Tensor of integers, got {type(valid_lens).__name__}")
    if valid_lens.dtype.is_floating_point or valid_lens.dtype.is_complex or valid_lens.dtype == torch.bool:
        raise TypeError(f"valid_lens: expected an integer dtype (torch.long), got {valid_lens.dtype}")
    if tuple(valid_lens.shape) not in ((batch,), (batch, num_queries)):
        raise ValueError(f"valid_lens: expected shape ({batch},) or ({batch}, {num_queries}) for batch={batch}, "
                         f"queries={num_queries}; got {tuple(valid_lens.shape)}")
    if valid_lens.numel():
        low, high = int(valid_lens.min()), int(valid_lens.max())
        if low < 0 or high > num_keys:
            raise ValueError(f"valid_lens: values must lie in [0, {num_keys}] (the number of keys); "
                             f"got min {low}, max {high}")
    return valid_lens


def lengths_to_mask(valid_lens: torch.Tensor, num_keys: int, score_ndim: int) -> torch.Tensor:
    """Key-padding mask from lengths, shaped to broadcast against scores of ``score_ndim`` dims.

    ``(B,)`` -> ``(B, 1.., 1, Tk)``; ``(B, Tq)`` -> ``(B, 1.., Tq, Tk)`` where ``1..`` fills the dims between
    batch and query (e.g. the head dim ``H`` of ``(B, H, Tq, Tk)`` scores).
    """
    positions = torch.arange(num_keys, device=valid_lens.device)
    mask = positions < valid_lens.unsqueeze(-1)  # (B, Tk) or (B, Tq, Tk)
    if valid_lens.dim() == 1:
        mask = mask.unsqueeze(1)  # (B, 1, Tk)
    extra = score_ndim - 3
    return mask.reshape(mask.shape[0], *([1] * extra), *mask.shape[1:])  # (B, 1.., Tq|1, Tk)


def causal_mask(num_queries: int, num_keys: int, device: torch.device | None = None) -> torch.Tensor:
    """``(Tq, Tk)`` lower-triangular mask aligned to the *end* of the keys.

    Query ``i`` sits at absolute position ``i + Tk - Tq``, so with a KV cache holding earlier steps the
    new queries see every cached key and themselves, never later keys.
    """
    offset = num_keys - num_queries
    q = torch.arange(num_queries, device=device).unsqueeze(1)
    k = torch.arange(num_keys, device=device).unsqueeze(0)
    return k <= q + offset  # (Tq, Tk)


def check_mask(mask: torch.Tensor, scores_shape: tuple[int, ...], name: str = "mask") -> None:
    """Raise ``TypeError``/``ValueError`` unless ``mask`` is boolean and broadcastable to ``scores_shape``."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name}: expected a boolean torch.Tensor (True = may attend), got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"{name}: expected dtype torch.bool (True = may attend), got {mask.dtype}; "
                        f"convert with `{name}.bool()` or `{name} == 0` for additive float masks")
    try:
        shape = torch.broadcast_shapes(tuple(mask.shape), scores_shape)
    except RuntimeError:
        shape = None
    if shape != tuple(scores_shape):
        raise ValueError(f"{name}: shape {tuple(mask.shape)} does not broadcast to the attention scores "
                         f"{tuple(scores_shape)}")


def combine(*masks: torch.Tensor | None) -> torch.Tensor | None:
    """Logical AND of the given masks (``None`` entries ignored); ``None`` when nothing restricts attention."""
    out = None
    for m in masks:
        if m is not None:
            out = m if out is None else out & m
    return out


def from_torch_masks(attn_mask: torch.Tensor | None = None,
                     key_padding_mask: torch.Tensor | None = None) -> torch.Tensor | None:
    """Convert ``nn.MultiheadAttention``-style masks (``True`` = blocked, or additive float) to attnlab's.

    ``attn_mask`` ``(Tq, Tk)`` or ``(B*H, Tq, Tk)`` is not supported in its per-head flattened form here;
    ``key_padding_mask`` ``(B, Tk)`` becomes ``(B, 1, 1, Tk)``. Float masks allow positions that are finite.
    """
    def allowed(m: torch.Tensor) -> torch.Tensor:
        return ~m if m.dtype == torch.bool else torch.isfinite(m) & (m > torch.finfo(m.dtype).min)

    out = None
    if attn_mask is not None:
        if attn_mask.dim() != 2:
            raise ValueError(f"attn_mask: expected shape (Tq, Tk), got {tuple(attn_mask.shape)}")
        out = allowed(attn_mask)
    if key_padding_mask is not None:
        if key_padding_mask.dim() != 2:
            raise ValueError(f"key_padding_mask: expected shape (B, Tk), got {tuple(key_padding_mask.shape)}")
        out = combine(out, allowed(key_padding_mask)[:, None, None, :])
    return out
