"""Explain a batch of examples with every method and summarize how far each picture can be trusted.

:func:`explain` runs the attention-based importances and the attributions on one example; :func:`explain_batch`
runs it on many and builds a :class:`FaithfulnessReport` (rank agreement, perturbation curves, uniform/permuted
attention), which prints as a table (:meth:`FaithfulnessReport.table`) and saves as JSON
(:meth:`FaithfulnessReport.to_dict`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from attnlab.core.errors import ConfigError
from attnlab.explain.adapters import ATTENTION_METHODS, Adapter, Example
from attnlab.explain.attribution import ATTRIBUTION_METHODS, attribute
from attnlab.explain.faithfulness import (
    _mean,
    attention_checks,
    perturbation_curves,
    ranking,
    row_agreement,
)

METHODS = ATTENTION_METHODS + ATTRIBUTION_METHODS
"""Every method, attention-based first."""

RANDOM = "random"
"""The seeded random ranking of the perturbation curves."""


@dataclass
class Explanation:
    """Every method's importance for one example.

    Attributes:
        example: the input and the explained output.
        scores: method -> ``(T,)`` (translation: ``(Tt, Ts)``) float64, in :data:`METHODS` order.
        heads: the raw attention of each layer and head as the read-out sees it, ``(L, H, T)`` (translation:
            ``(L, H, Tt, Ts)`` cross-attention), or ``None``.
    """

    example: Example
    scores: dict[str, torch.Tensor]
    heads: torch.Tensor | None = None


def check_methods(methods: Sequence[str] | None) -> list[str]:
    """``methods`` validated (``None``: all), in :data:`METHODS` order."""
    if methods is None:
        return list(METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method {unknown[0]!r:.40}; choose from {', '.join(METHODS)}")
    if not methods:
        raise ConfigError("no method chosen")
    return [m for m in METHODS if m in methods]


def explain(adapter: Adapter, example: Example, methods: Sequence[str] | None = None, *, ig_steps: int = 32,
            residual: float = 0.5) -> Explanation:
    """All chosen importances of one example (methods that do not apply to the model are left out: an RNN
    classifier has no self-attention layers to roll out)."""
    methods = check_methods(methods)
    attention = adapter.attention_importance(example, [m for m in methods if m in ATTENTION_METHODS],
                                             residual=residual)
    scores = dict(attention.scores)
    scores.update(attribute(adapter, example, [m for m in methods if m in ATTRIBUTION_METHODS], ig_steps=ig_steps))
    return Explanation(example, {m: scores[m] for m in METHODS if m in scores}, attention.heads)


@dataclass
class FaithfulnessReport:
    """Summary over a batch of explanations (all numbers are means over the examples unless said otherwise).

    Attributes:
        n: examples.
        methods: the methods with scores, in :data:`METHODS` order.
        agreement: ``"a|b"`` -> ``{"kendall", "spearman", "n"}`` for every pair of methods (``n``: examples where
            both rankings exist).
        head_agreement: attribution method -> ``(L, H)`` nested list of the mean Kendall tau between each layer's
            head (as the read-out sees it) and that attribution.
        ks: the ``k`` of the curves (1 .. max_k).
        curves: method (and ``"random"``) -> ``{"comprehensiveness": [K], "sufficiency": [K],
            "comprehensiveness_aopc", "sufficiency_aopc"}``.
        checks: ``"pooling uniform"``, ``"layers.L.self_attn permuted"``... -> ``{"mean_abs_dp", "flips", "trials"}``.
        unavailable: what was asked for but cannot be measured on this model -> why (e.g. the attention checks
            of a captured model).
    """

    n: int
    methods: list[str]
    agreement: dict[str, dict[str, float]]
    head_agreement: dict[str, list[list[float]]]
    ks: list[int]
    curves: dict[str, dict[str, Any]]
    checks: dict[str, dict[str, float]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN becomes ``None``; ``unavailable`` only when not empty)."""
        def clean(x: Any) -> Any:
            if isinstance(x, float):
                return None if math.isnan(x) else round(x, 6)
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, list):
                return [clean(v) for v in x]
            return x

        out = {"n": self.n, "methods": self.methods, "agreement": self.agreement,
               "head_agreement": self.head_agreement, "ks": self.ks, "curves": self.curves, "checks": self.checks}
        if self.unavailable:  # only where something could not be measured: the other reports keep their keys
            out["unavailable"] = self.unavailable
        return clean(out)

    def tau(self, a: str, b: str) -> float:
        return self.agreement.get(f"{a}|{b}", self.agreement.get(f"{b}|{a}", {})).get("kendall", math.nan)

    def table(self) -> str:
        """Methods x metrics: comprehensiveness at k=1 and its AOPC, sufficiency AOPC (lower is better), and the
        mean Kendall tau against integrated gradients and leave-one-out; then the attention checks."""
        refs = [m for m in ("integrated_gradients", "leave_one_out") if m in self.methods]
        short = {"integrated_gradients": "IG", "leave_one_out": "LOO"}
        head = ["method", "comp@1", "comp AOPC", "suff AOPC"] + [f"tau vs {short[r]}" for r in refs]
        rows = []
        for m in [*self.methods, RANDOM]:
            c = self.curves.get(m)
            if c is None:
                continue
            taus = [_fmt(self.tau(m, r)) if m not in (r, RANDOM) else "--" for r in refs]
            rows.append([m, _fmt(c["comprehensiveness"][0]), _fmt(c["comprehensiveness_aopc"]),
                         _fmt(c["sufficiency_aopc"]), *taus])
        lines = [_grid([head, *rows])]
        for ref in refs[:1]:  # one line per layer: which head agrees best with the reference attribution
            grid = self.head_agreement.get(ref, [])
            best = [max(range(len(taus)), key=lambda h, t=taus: -math.inf if math.isnan(t[h]) else t[h])
                    for taus in grid]
            if grid:
                lines.append("")
                lines.append(f"heads (the read-out's view) vs {short[ref]}, mean tau: " + "; ".join(
                    f"layer {layer}: " + " ".join(_fmt(t) for t in taus) + f" (best head {best[layer]})"
                    for layer, taus in enumerate(grid)))
        if self.checks:
            lines.append("")
            lines.append(_grid([["attention replaced", "mean |dp|", "label flips"],
                                *[[name, _fmt(c["mean_abs_dp"]), f"{int(c['flips'])}/{int(c['trials'])}"]
                                  for name, c in self.checks.items()]]))
        if self.unavailable:
            lines.append("")
            lines += [f"{what}: {why}" for what, why in self.unavailable.items()]
        return "\n".join(lines)


def _fmt(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.3f}"


def _grid(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for j, r in enumerate(rows):
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths,
                                                                                                strict=True))))
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def explain_batch(adapter: Adapter, examples: Sequence[Example], methods: Sequence[str] | None = None, *,
                  ig_steps: int = 32, max_k: int = 10, seed: int = 0, permutations: int = 5, checks: bool = True,
                  residual: float = 0.5,
                  progress: Callable[[int], None] | None = None) -> tuple[list[Explanation], FaithfulnessReport]:
    """Explain every example and summarize (see :mod:`attnlab.explain.faithfulness` for the definitions).

    Args:
        max_k: the longest prefix of a ranking removed (or kept) by the perturbation curves.
        seed: seeds the random ranking and the permutations.
        permutations: permuted-attention trials per example and attention module.
        checks: run the uniform/permuted attention checks (classifiers and ViT; where the adapter cannot, its
            ``checks_note`` goes into the report's ``unavailable``).
        progress: called with 1 after each example (a progress bar's ``update``).
    """
    if not examples:
        raise ConfigError("no examples to explain")
    if isinstance(max_k, bool) or not isinstance(max_k, int) or max_k < 1:
        raise ConfigError(f"max_k must be a positive integer, got {max_k!r:.40}")
    if isinstance(permutations, bool) or not isinstance(permutations, int) or permutations < 1:
        raise ConfigError(f"permutations must be a positive integer, got {permutations!r:.40}")
    generator = torch.Generator().manual_seed(seed)
    explanations, curves, check_trials = [], [], []
    for example in examples:
        e = explain(adapter, example, methods, ig_steps=ig_steps, residual=residual)
        explanations.append(e)
        orders = {m: ranking(s) for m, s in e.scores.items()}
        orders[RANDOM] = torch.randperm(example.num_positions, generator=generator)
        curves.append(perturbation_curves(adapter, example, orders, max_k=max_k))
        if checks:
            check_trials.append(attention_checks(adapter, example, permutations=permutations, generator=generator))
        if progress is not None:
            progress(1)
    report = summarize(explanations, curves, check_trials, max_k=max_k)
    if checks and adapter.checks_note:
        report.unavailable["uniform/permuted attention"] = adapter.checks_note
    return explanations, report


def summarize(explanations: Sequence[Explanation], curves: Sequence[dict[str, dict[str, list[float]]]],
              check_trials: Sequence[dict[str, dict[str, list[float]]]], *, max_k: int) -> FaithfulnessReport:
    """Average per-example results into a :class:`FaithfulnessReport`."""
    methods = [m for m in METHODS if all(m in e.scores for e in explanations)]
    agreement = {}
    for i, a in enumerate(methods):
        for b in methods[i + 1:]:
            pairs = [row_agreement(e.scores[a], e.scores[b]) for e in explanations]
            taus = [t for t, _ in pairs if not math.isnan(t)]
            agreement[f"{a}|{b}"] = {"kendall": _mean(taus), "spearman": _mean([r for _, r in pairs]),
                                     "n": float(len(taus))}
    head_agreement = {}
    heads = [e.heads for e in explanations]
    if all(h is not None for h in heads) and len({tuple(h.shape[:2]) for h in heads}) == 1:
        L, H = heads[0].shape[:2]
        for b in (m for m in methods if m in ATTRIBUTION_METHODS):
            head_agreement[b] = [[_mean([row_agreement(e.heads[l, h], e.scores[b])[0] for e in explanations])
                                  for h in range(H)] for l in range(L)]
    names = [m for m in [*methods, RANDOM] if all(m in c for c in curves)]
    summary = {}
    for m in names:
        comp = [_mean([c[m]["comprehensiveness"][k] for c in curves]) for k in range(max_k)]
        suff = [_mean([c[m]["sufficiency"][k] for c in curves]) for k in range(max_k)]
        summary[m] = {"comprehensiveness": comp, "sufficiency": suff, "comprehensiveness_aopc": _mean(comp),
                      "sufficiency_aopc": _mean(suff)}
    checks = {}
    for name in (check_trials[0] if check_trials else {}):
        dp = [v for t in check_trials for v in t[name]["abs_dp"]]
        flips = [v for t in check_trials for v in t[name]["flips"]]
        checks[name] = {"mean_abs_dp": _mean(dp), "flips": float(sum(flips)), "trials": float(len(flips))}
    return FaithfulnessReport(len(explanations), methods, agreement, head_agreement, list(range(1, max_k + 1)),
                              summary, checks)
