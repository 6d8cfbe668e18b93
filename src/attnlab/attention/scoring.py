"""Single-head attention with the classic scoring functions, behind one interface.

Each module computes scores ``(B, Tq, Tk)`` from queries and keys, applies :func:`masked_softmax` and
returns the weighted sum of values. ``weights`` are always the probabilities *before* dropout. Weights hooks
(:meth:`~attnlab.attention.multihead.WeightsHooks.register_weights_hook`, as on ``MultiHeadAttention``) see them
and may replace them; a model that computes attention with a module's pieces for speed (the recurrent decoders)
checks :func:`is_observed` and runs the module itself when anything watches it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.module import _global_forward_hooks

from attnlab.attention._checks import check_dropout, check_positive, check_qkv
from attnlab.attention.dropout import Dropout
from attnlab.attention.functional import build_mask, softmax_with_mask, zero_unreachable
from attnlab.attention.multihead import WeightsHooks
from attnlab.core.types import AttentionOutput


def is_observed(module: nn.Module) -> bool:
    """Whether forward hooks (``attnlab.viz.capture``) or weights hooks (``attnlab.explain``) watch ``module``: a
    caller that uses its pieces directly must then call the module itself, so that every step is seen."""
    return bool(module._forward_hooks or module._forward_pre_hooks or _global_forward_hooks
                or (isinstance(module, WeightsHooks) and module._has_weights_hooks()))


class ScoringAttention(WeightsHooks, nn.Module, ABC):
    """Base class: subclasses define :meth:`score`; masking, dropout, weights hooks and the weighted sum live
    here."""

    query_dim: int | None = None
    key_dim: int | None = None

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = Dropout(check_dropout(type(self).__name__, dropout))

    @abstractmethod
    def score(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """``queries`` ``(B, Tq, Dq)``, ``keys`` ``(B, Tk, Dk)`` -> scores ``(B, Tq, Tk)``."""

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                valid_lens: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> AttentionOutput:
        """Attend from ``queries`` ``(B, Tq, Dq)`` over ``keys`` ``(B, Tk, Dk)`` / ``values`` ``(B, Tk, Dv)``.

        Args:
            valid_lens: ``(B,)`` or ``(B, Tq)`` number of keys each row/query may see.
            mask: boolean broadcastable to ``(B, Tq, Tk)``, ``True`` = may attend.

        Returns:
            ``AttentionOutput(output (B, Tq, Dv), weights (B, Tq, Tk))``.
        """
        # 1. Validate, and build the combined mask before scoring.
        check_qkv(queries, keys, values, self.query_dim, self.key_dim)
        scores_shape = (queries.shape[0], queries.shape[1], keys.shape[1])
        combined = build_mask(scores_shape, valid_lens=valid_lens, mask=mask, device=queries.device)
        # 2. Unreachable keys/values are zeroed so NaN/inf padding cannot leak (not even via gradients).
        keys, values = zero_unreachable(keys, values, combined)
        # 3. Score, normalize, drop out, mix.
        weights = softmax_with_mask(self.score(queries, keys), combined)  # (B, Tq, Tk)
        if self._has_weights_hooks():  # they may replace the weights, which are then used exactly
            weights = self._run_weights_hooks(weights)
        output = torch.bmm(self.dropout(weights), values)  # (B, Tq, Dv)
        return AttentionOutput(output, weights)


def _require_same_dim(owner: str, queries: torch.Tensor, keys: torch.Tensor) -> None:
    if queries.shape[-1] != keys.shape[-1]:
        raise ValueError(f"{owner}: queries and keys need the same feature size, got {queries.shape[-1]} and "
                         f"{keys.shape[-1]}; use GeneralAttention or AdditiveAttention for different sizes")


class DotProductAttention(ScoringAttention):
    """``score(q, k) = q . k`` (Luong et al., 2015, "dot")."""

    def score(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        _require_same_dim(type(self).__name__, queries, keys)
        return torch.bmm(queries, keys.transpose(1, 2))  # (B, Tq, Tk)


class ScaledDotProductAttention(ScoringAttention):
    """``score(q, k) = q . k / sqrt(d)`` (Vaswani et al., 2017, eq. 1)."""

    def score(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        _require_same_dim(type(self).__name__, queries, keys)
        return torch.bmm(queries, keys.transpose(1, 2)) / math.sqrt(queries.shape[-1])  # (B, Tq, Tk)


class GeneralAttention(ScoringAttention):
    """``score(q, k) = q W k^T`` with ``W`` of shape ``(Dq, Dk)`` (Luong et al., 2015, "general")."""

    def __init__(self, query_size: int, key_size: int, dropout: float = 0.0) -> None:
        super().__init__(dropout)
        self.query_dim = check_positive(type(self).__name__, "query_size", query_size)
        self.key_dim = check_positive(type(self).__name__, "key_size", key_size)
        self.weight = nn.Parameter(torch.empty(query_size, key_size))
        nn.init.xavier_uniform_(self.weight)

    def score(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        projected = queries @ self.weight  # (B, Tq, Dk)
        return torch.bmm(projected, keys.transpose(1, 2))  # (B, Tq, Tk)


class AdditiveAttention(ScoringAttention):
    """``score(q, k) = v^T tanh(W_q q + W_k k)`` (Bahdanau et al., 2015, eq. 6); sizes of q and k may differ."""

    def __init__(self, query_size: int, key_size: int, hidden_size: int, dropout: float = 0.0) -> None:
        super().__init__(dropout)
        owner = type(self).__name__
        self.query_dim = check_positive(owner, "query_size", query_size)
        self.key_dim = check_positive(owner, "key_size", key_size)
        check_positive(owner, "hidden_size", hidden_size)
        self.W_q = nn.Linear(query_size, hidden_size, bias=False)
        self.W_k = nn.Linear(key_size, hidden_size, bias=False)
        self.w_v = nn.Linear(hidden_size, 1, bias=False)

    def score(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return self.score_projected(self.W_q(queries), self.W_k(keys))

    def score_projected(self, q_proj: torch.Tensor, k_proj: torch.Tensor) -> torch.Tensor:
        """Scores from already projected ``W_q q`` ``(B, Tq, h)`` and ``W_k k`` ``(B, Tk, h)``.

        Decoders call this with ``W_k k`` computed once per sentence instead of once per step.
        """
        features = torch.tanh(q_proj.unsqueeze(2) + k_proj.unsqueeze(1))  # (B, Tq, Tk, h)
        return F.linear(features, self.w_v.weight).squeeze(-1)  # (B, Tq, Tk)
