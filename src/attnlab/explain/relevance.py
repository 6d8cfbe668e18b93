"""Attention-based importance: raw attention, rollout, flow and gradient-weighted rollout, read out for one output.

A *read-out* says which output is explained: a position ``i`` of the last layer (a ViT's class token), or a
distribution over the last layer's positions (a classifier's attention-pooling weights, a decoder step's
cross-attention). Every method returns one importance per input position ``(T,)``:

* ``attention``: the read-out itself (for a position: its last-layer attention row, head-averaged);
* ``rollout``: the read-out times ``attention_rollout`` of the self-attention stack (Abnar & Zuidema, 2020, eq. 1);
* ``flow``: the maximum flow from the read-out to each input (:mod:`attnlab.explain.flow`);
* ``grad_rollout``: Chefer, Gur & Wolf (2021), "Transformer Interpretability Beyond Attention Visualization",
  eqs. 13-14 with the rule of their follow-up "Generic Attention-model Explainability for Interpreting Bi-Modal
  and Encoder-Decoder Transformers" (ICCV 2021), eq. 6: ``Ā = E_h[(∇A ⊙ A)^+]``, ``R <- R + Ā R`` from ``R = I``.

Dimension legend: ``L`` layers, ``H`` heads, ``T`` positions; ``Tt``/``Ts`` target/source positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from attnlab.core.errors import DataError

Pair = tuple[torch.Tensor, torch.Tensor]  # (attention, its gradient), same shape


def gradient_weighted(attention: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """``Ā = E_h[(∇A ⊙ A)^+]``: ``(H, Tq, Tk)`` attention and gradient -> ``(Tq, Tk)``. Chefer et al. (2021), eq. 5."""
    if attention.shape != gradient.shape or attention.dim() != 3:
        raise DataError(f"attention and gradient must both be (H, Tq, Tk), got {tuple(attention.shape)} and "
                        f"{tuple(gradient.shape)}")
    return (gradient.double() * attention.double()).clamp_min(0).mean(0)  # (Tq, Tk)


def gradient_rollout(attentions: Sequence[torch.Tensor] | torch.Tensor,
                     gradients: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """Relevance of a self-attention stack: ``R = I``, then ``R <- R + Ā_l R`` per layer, first layer first.

    Args:
        attentions, gradients: ``(L, H, T, T)`` (or ``L`` tensors ``(H, T, T)``): each layer's attention and the
            gradient of the explained output with respect to it.

    Returns:
        ``(T, T)`` float64; row ``i`` is the relevance of each input token for position ``i`` (the identity when
        every gradient is zero: then only the residual path carries anything).
    """
    if len(attentions) != len(gradients):
        raise DataError(f"{len(attentions)} attention layers but {len(gradients)} gradients")
    if len(attentions) == 0:
        raise DataError("gradient_rollout needs at least one layer")
    T = attentions[0].shape[-1]
    relevance = torch.eye(T, dtype=torch.float64)
    for a, g in zip(attentions, gradients, strict=True):
        relevance = relevance + gradient_weighted(a, g) @ relevance  # (T, T)
    return relevance


def _normalized(relevance: torch.Tensor) -> torch.Tensor:
    """``R̄ = R̂ + I`` with ``R̂ = R - I`` rows scaled to sum to 1 (Chefer et al., ICCV 2021, eqs. 8-9)."""
    eye = torch.eye(relevance.shape[-1], dtype=relevance.dtype)
    hat = relevance - eye
    sums = hat.sum(-1, keepdim=True)
    return torch.where(sums > 0, hat / sums.clamp_min(1e-12), hat) + eye


def encoder_decoder_relevance(encoder_self: Sequence[Pair], decoder_self: Sequence[Pair],
                              cross: Sequence[Pair]) -> torch.Tensor:
    """Source relevance of every target position of an encoder-decoder (Chefer et al., ICCV 2021, eqs. 6-11).

    The encoder gives ``R_ss`` by :func:`gradient_rollout`. Then, decoder layer by layer, self-attention updates
    ``R_tt <- R_tt + Ā R_tt`` and ``R_ts <- R_ts + Ā R_ts`` (eqs. 6-7), and cross-attention adds
    ``R_ts <- R_ts + R̄_tt^T Ā R̄_ss`` (eq. 10; the encoder never attends to the target, so eq. 11 adds nothing).

    Args:
        encoder_self: per encoder layer ``(A, ∇A)``, each ``(H, Ts, Ts)``.
        decoder_self: per decoder layer, each ``(H, Tt, Tt)``.
        cross: per decoder layer, each ``(H, Tt, Ts)``.

    Returns:
        ``R_ts`` ``(Tt, Ts)`` float64.
    """
    if len(decoder_self) != len(cross):
        raise DataError(f"{len(decoder_self)} decoder self-attention layers but {len(cross)} cross-attention layers")
    Ts = cross[0][0].shape[-1]
    Tt = cross[0][0].shape[-2]
    r_ss = (gradient_rollout([a for a, _ in encoder_self], [g for _, g in encoder_self]) if encoder_self
            else torch.eye(Ts, dtype=torch.float64))
    r_tt = torch.eye(Tt, dtype=torch.float64)
    r_ts = torch.zeros(Tt, Ts, dtype=torch.float64)
    r_ss_bar = _normalized(r_ss)
    for (a_self, g_self), (a_cross, g_cross) in zip(decoder_self, cross, strict=True):
        bar = gradient_weighted(a_self, g_self)  # (Tt, Tt)
        r_tt = r_tt + bar @ r_tt
        r_ts = r_ts + bar @ r_ts
        r_ts = r_ts + _normalized(r_tt).T @ gradient_weighted(a_cross, g_cross) @ r_ss_bar  # (Tt, Ts)
    return r_ts


def read_out(matrix: torch.Tensor, read: int | torch.Tensor) -> torch.Tensor:
    """Row ``read`` of a ``(T, T)`` matrix, or the ``(T,)`` distribution ``read`` times it."""
    if isinstance(read, torch.Tensor):
        return read.to(matrix.dtype) @ matrix  # (T,)
    return matrix[read]


def head_readouts(self_attention: torch.Tensor | None, read: int | torch.Tensor) -> torch.Tensor | None:
    """``(L, H, T)``: what the read-out sees through each layer and head alone, ``read`` applied to ``A_{l,h}``.

    For a class token ``i`` that is row ``i`` of every head; for a read-out distribution ``p``, ``p A_{l,h}``.
    """
    if self_attention is None or self_attention.numel() == 0:
        return None
    w = self_attention.double()  # (L, H, T, T)
    if isinstance(read, torch.Tensor):
        return torch.einsum("t,lhts->lhs", read.double(), w)  # (L, H, T)
    return w[:, :, read]  # (L, H, T)


def attention_methods(self_attention: torch.Tensor | None, read: int | torch.Tensor, *,
                      residual: float = 0.5, methods: Sequence[str] = ("attention", "rollout", "flow"),
                      raw: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The attention-only importances of one example (no gradients needed; works on captured maps of any model).

    Args:
        self_attention: ``(L, H, T, T)`` self-attention stack, first layer first, or ``None`` (no self-attention:
            an RNN classifier; then only ``attention`` is defined).
        read: the read-out: a position of the last layer, or a ``(T,)`` distribution over it.
        raw: the ``attention`` importance when it is not the read-out itself (a class token: its last-layer row).

    Returns:
        method name -> ``(T,)`` float64 importance.
    """
    from attnlab.explain.flow import attention_flow
    from attnlab.viz.analysis import attention_rollout

    out: dict[str, torch.Tensor] = {}
    if "attention" in methods:
        if raw is not None:
            out["attention"] = raw.double()
        elif isinstance(read, torch.Tensor):
            out["attention"] = read.double()
        elif self_attention is not None:
            out["attention"] = self_attention[-1].double().mean(0)[read]
    has_layers = self_attention is not None and self_attention.numel() > 0
    if "rollout" in methods and has_layers:
        out["rollout"] = read_out(attention_rollout(self_attention, residual=residual).double(), read)
    if "flow" in methods and has_layers:
        out["flow"] = attention_flow(self_attention, source=read if isinstance(read, torch.Tensor) else int(read),
                                     residual=residual)
    return out


