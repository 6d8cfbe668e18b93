"""Attention flow (Abnar & Zuidema, 2020, "Quantifying Attention Flow in Transformers", section 3).

The layers of a self-attention stack form a directed acyclic graph: node ``(l, i)`` is position ``i`` after
layer ``l`` (``l = 0``: the input embeddings, ``l = L``: the last layer's output). Layer ``l``'s attention, fused
over heads, with the residual connection modelled as in rollout,

    Â_l = r I + (1 - r) A_l, rows renormalized to sum to 1 (the *residual convention*, ``r = residual``),

gives the capacities of the edges ``(l, i) -> (l - 1, j)``: ``Â_l[i, j]``. The flow from an output to input
token ``j`` is the value of a maximum flow from the output's node to node ``(0, j)``. An output is a node
``(L, i)`` (a class token, a position) or a read-out distribution over the last layer (attention pooling's
weights, a decoder step's cross-attention): then a super-source feeds each ``(L, i)`` with that weight.
Rollout multiplies the matrices (the sum over paths of the products of their weights); flow is bounded by
the narrowest cut between output and input instead.

With one layer and a node as the output the only path is one edge, so the flow to ``j`` *is* ``Â_1[i, j]``
(the raw attention row when ``residual = 0``).

``scipy.sparse.csgraph.maximum_flow`` works on integer capacities: each capacity is rounded to a multiple of
``1 / scale``, so a flow differs from the real-valued one by at most (edges in a minimum cut) / (2 scale), at
most ``L T^2 / (2 scale)``.

Dimension legend: ``L`` layers, ``H`` heads, ``T`` positions.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from attnlab.core.errors import ConfigError, DataError

DEFAULT_SCALE = 2 ** 20
"""Integer units per unit of attention: one node's outgoing capacities sum to at most ``scale``, well in int32."""


def _scipy() -> Any:
    try:
        from scipy import sparse
        from scipy.sparse import csgraph
    except ImportError:
        raise ConfigError("attention flow needs scipy: pip install 'attnlab[explain]'") from None
    return sparse, csgraph


def fuse_layers(weights: Any, *, residual: float = 0.5, head_fusion: Literal["mean", "max", "min"] = "mean",
                kind: str | None = None) -> torch.Tensor:
    """``(L, T, T)`` residual-augmented, row-normalized attention ``Â_l`` of every layer (see the module docstring).

    Args:
        weights: ``(L, H, T, T)`` (heads are fused), ``(L, T, T)`` (already fused), or a capture result /
            ``AttentionMaps`` of one example (``kind`` picks the attention, as in ``attention_rollout``).
    """
    from attnlab.viz.analysis import _tensor

    if not 0.0 <= residual <= 1.0:
        raise ConfigError(f"residual must be in [0, 1], got {residual!r:.40}")
    w = _tensor(weights, kind).double()
    if w.dim() == 5 and w.shape[1] == 1:  # a capture of one example: (L, 1, H, T, T)
        w = w[:, 0]
    if w.dim() not in (3, 4) or w.shape[-1] != w.shape[-2]:
        raise DataError(f"expected self-attention (L, H, T, T) or (L, T, T) of one example, got {tuple(w.shape)}")
    if w.dim() == 4:
        fuse = {"mean": lambda x: x.mean(1), "max": lambda x: x.amax(1), "min": lambda x: x.amin(1)}
        if head_fusion not in fuse:
            raise ConfigError(f"head_fusion must be mean, max or min, got {head_fusion!r:.40}")
        w = fuse[head_fusion](w)  # (L, T, T)
    a = residual * torch.eye(w.shape[-1], dtype=w.dtype) + (1.0 - residual) * w.clamp_min(0)  # (L, T, T)
    return a / a.sum(-1, keepdim=True).clamp_min(1e-12)  # rows sum to 1 again (all-zero rows stay 0)


def flow_graph(layers: torch.Tensor, source_weights: torch.Tensor | None = None, *,
               scale: int = DEFAULT_SCALE) -> Any:
    """The layer graph as a ``scipy.sparse.csr_matrix`` of int32 capacities (``layers``: ``(L, T, T)`` = ``Â``).

    Node ``l * T + i`` is ``(l, i)``; with ``source_weights`` ``(T,)`` a super-source node ``(L + 1) * T`` gets edges
    to the last layer's nodes with those capacities.
    """
    sparse, _ = _scipy()
    if isinstance(scale, bool) or not isinstance(scale, int) or not 1 <= scale <= 2 ** 24:
        raise ConfigError(f"scale must be an integer in [1, 2^24], got {scale!r:.40}")
    L, T, _ = layers.shape
    caps = np.rint(layers.detach().cpu().double().numpy() * scale).astype(np.int64)  # (L, T, T)
    ll, ii, jj = np.nonzero(caps)
    rows = (ll + 1) * T + ii  # node (l, i), l = 1..L
    cols = ll * T + jj  # node (l - 1, j)
    data = caps[ll, ii, jj]
    n = (L + 1) * T
    if source_weights is not None:
        s = np.rint(source_weights.detach().cpu().double().clamp_min(0).numpy() * scale).astype(np.int64)  # (T,)
        nz = np.nonzero(s)[0]
        rows = np.concatenate([rows, np.full(len(nz), n)])
        cols = np.concatenate([cols, L * T + nz])
        data = np.concatenate([data, s[nz]])
        n += 1
    if data.size and data.max() >= 2 ** 31:
        raise ConfigError("capacities overflow int32: lower scale")
    return sparse.csr_matrix((data.astype(np.int32), (rows, cols)), shape=(n, n))


def max_flows(graph: Any, source: int, sinks: list[int]) -> list[int]:
    """Integer maximum-flow values from ``source`` to each node of ``sinks`` (each computed on its own)."""
    _, csgraph = _scipy()
    return [0 if sink == source else int(csgraph.maximum_flow(graph, source, sink).flow_value) for sink in sinks]


def attention_flow(weights: Any, *, source: int | torch.Tensor | None = None, residual: float = 0.5,
                   head_fusion: Literal["mean", "max", "min"] = "mean", scale: int = DEFAULT_SCALE,
                   kind: str | None = None) -> torch.Tensor:
    """Attention flow from the last layer to the input tokens (Abnar & Zuidema, 2020).

    Args:
        weights: self-attention of one example, ``(L, H, T, T)`` or ``(L, T, T)``, first layer first, or a capture
            result / ``AttentionMaps`` (any model attnlab can capture, e.g. ``nn.TransformerEncoder``).
        source: ``None``: every output position (a ``(T, T)`` matrix, ``T^2`` flows); an int ``i``: the output node
            ``(L, i)`` (a class token), ``(T,)``; a ``(T,)`` tensor of read-out weights (attention pooling): a
            super-source feeding the last layer with them, ``(T,)``.
        residual: ``r`` of ``Â = r I + (1 - r) A`` (0.5 as in the paper and in ``attention_rollout``).
        scale: integer units per unit of attention (see the module docstring for the rounding bound).

    Returns:
        float64 flows ``>= 0``: ``(T,)`` for a ``source``, else ``(T, T)`` with row ``i`` the flows from ``(L, i)``.
    """
    layers = fuse_layers(weights, residual=residual, head_fusion=head_fusion, kind=kind)  # (L, T, T)
    L, T, _ = layers.shape
    sinks = list(range(T))  # nodes (0, j)
    if source is None:
        graph = flow_graph(layers, scale=scale)
        rows = [max_flows(graph, L * T + i, sinks) for i in range(T)]
        return torch.tensor(rows, dtype=torch.float64) / scale  # (T, T)
    if isinstance(source, torch.Tensor):
        if source.shape != (T,):
            raise DataError(f"source weights must have shape ({T},), got {tuple(source.shape)}")
        graph = flow_graph(layers, source.double(), scale=scale)
        return torch.tensor(max_flows(graph, (L + 1) * T, sinks), dtype=torch.float64) / scale  # (T,)
    if isinstance(source, bool) or not isinstance(source, int) or not -T <= source < T:
        raise ConfigError(f"source must be a position in [0, {T}), a (T,) tensor or None, got {source!r:.40}")
    graph = flow_graph(layers, scale=scale)
    return torch.tensor(max_flows(graph, L * T + source % T, sinks), dtype=torch.float64) / scale  # (T,)
