"""How far to trust an importance map: rank agreement, perturbation curves, uniform and permuted attention.

* **Rank agreement** (Jain & Wallace, 2019, section 3): Kendall's tau-b and Spearman's rho (``scipy.stats``)
  between two importances of the same example over its positions (for a translation: per generated token, then
  averaged over the tokens), averaged over examples; examples where one side is constant (no ranking) are left
  out and counted.
* **Perturbation curves** (DeYoung et al., 2020, "ERASER", section 4): remove the top ``k`` positions of a ranking
  (tokens -> ``<unk>``, patches -> the mean gray, see :mod:`attnlab.explain.adapters`) and measure the drop in the
  probability of the explained output: *comprehensiveness* ``p(x) - p(x without top k)`` (large = the ranking found
  what the output needs); keep only the top ``k`` for *sufficiency* ``p(x) - p(only top k)`` (small = they
  suffice). ``k = 1 .. max_k``; an example with ``T <= k`` positions counts with all of them. A seeded random
  ranking gives the floor. The area under each curve is its mean over ``k`` (AOPC).
* **Uniform and permuted attention** (Jain & Wallace, 2019, section 4; Wiegreffe & Pinter, 2019, section 3.1): the
  classifier's pooling attention, or one self-attention layer, is replaced by uniform weights over the real
  positions or by its own weights permuted over them; reported: the mean ``|Δp|`` of the predicted class and how
  often the label flips.

Rankings break ties by position (a stable sort).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from attnlab.core.errors import ConfigError
from attnlab.explain.adapters import Adapter, Example
from attnlab.explain.overrides import override_attention, permuted_weights, uniform_weights


def _stats() -> Any:
    try:
        from scipy import stats
    except ImportError:
        raise ConfigError("rank agreement needs scipy: pip install 'attnlab[explain]'") from None
    return stats


def rank_agreement(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """``(Kendall tau-b, Spearman rho)`` of two ``(T,)`` importances; NaN when either is constant or ``T < 2``."""
    x = a.detach().double().reshape(-1).numpy()
    y = b.detach().double().reshape(-1).numpy()
    if x.shape != y.shape:
        raise ConfigError(f"rank_agreement: {x.shape[0]} and {y.shape[0]} values")
    if len(x) < 2 or x.min() == x.max() or y.min() == y.max():
        return math.nan, math.nan
    stats = _stats()
    return float(stats.kendalltau(x, y).statistic), float(stats.spearmanr(x, y).statistic)


def row_agreement(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """:func:`rank_agreement` of ``(T,)`` vectors, or the mean over the rows of ``(Tt, Ts)`` matrices."""
    if a.dim() == 1:
        return rank_agreement(a, b)
    pairs = [rank_agreement(x, y) for x, y in zip(a, b, strict=True)]
    taus = [t for t, _ in pairs if not math.isnan(t)]
    rhos = [r for _, r in pairs if not math.isnan(r)]
    return (sum(taus) / len(taus) if taus else math.nan), (sum(rhos) / len(rhos) if rhos else math.nan)


def ranking(scores: torch.Tensor) -> torch.Tensor:
    """Positions from most to least important (``(T,)``; rows of a ``(Tt, Ts)`` map are averaged first)."""
    s = scores.double()
    if s.dim() == 2:
        s = s.mean(0)  # (Ts,): the source tokens for the whole output
    return torch.argsort(-s, stable=True)


def perturbation_curves(adapter: Adapter, example: Example, rankings: dict[str, torch.Tensor], *,
                        max_k: int = 10) -> dict[str, dict[str, list[float]]]:
    """Comprehensiveness and sufficiency at ``k = 1 .. max_k`` for each ranking of one example (one batched pass).

    Returns:
        method -> ``{"comprehensiveness": [K], "sufficiency": [K]}``.
    """
    T = example.num_positions
    names = list(rankings)
    drops = []  # (B, T) rows: for each method, first the comprehensiveness masks, then the sufficiency masks
    for name in names:
        order = rankings[name]
        top = [torch.zeros(T, dtype=torch.bool).index_fill(0, order[:min(k, T)], True) for k in range(1, max_k + 1)]
        drops += top + [~m for m in top]
    full = float(adapter.score(example.inputs, example)[0])
    probs = adapter.score(adapter.remove(example, torch.stack(drops)), example).tolist()  # (B,) on any device
    out = {}
    for i, name in enumerate(names):
        chunk = probs[2 * max_k * i:2 * max_k * (i + 1)]
        out[name] = {"comprehensiveness": [full - p for p in chunk[:max_k]],
                     "sufficiency": [full - p for p in chunk[max_k:]]}
    return out


def attention_checks(adapter: Adapter, example: Example, *, permutations: int = 5,
                     generator: torch.Generator) -> dict[str, dict[str, list[float]]]:
    """Uniform and permuted pooling attention and per-layer attention of one classifier example.

    Returns:
        check name (``"pooling uniform"``, ``"layers.0.self_attn permuted"`` ...) -> ``{"abs_dp": [...],
        "flips": [...]}`` (one entry per trial: 1 uniform, ``permutations`` permuted).
    """
    if adapter.kind == "translation":
        return {}
    target = int(example.target)
    targets = [("pooling", adapter.pooling_module())] if adapter.pooling_module() is not None else []
    targets += adapter.attention_layers()
    out: dict[str, dict[str, list[float]]] = {}
    for name, module in targets:
        for how in ("uniform", "permuted"):
            rows = 1 if how == "uniform" else permutations
            inputs = example.inputs.expand(rows, *example.inputs.shape[1:])

            def replace(w: torch.Tensor, how: str = how) -> torch.Tensor:
                return uniform_weights(w) if how == "uniform" else permuted_weights(w, generator)

            with torch.no_grad(), override_attention(module, replace):
                probs = adapter.log_probs(inputs).exp()  # (rows, C)
            out[f"{name} {how}"] = {"abs_dp": (probs[:, target] - example.probability).abs().tolist(),
                                    "flips": (probs.argmax(-1) != target).double().tolist()}
    return out


def _mean(values: Sequence[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan
