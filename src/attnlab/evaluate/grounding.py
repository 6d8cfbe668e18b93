"""Attention grounding: when a captioner emits an item's noun, how much of that step's attention lies in its box.

The decoder's cross-attention at one step is a distribution over the ``gh x gw`` patches of a square image
(``gh = gw = image_size // patch_size``, row-major as a ViT flattens them). Its *box mass* is

    sum over patches p of  weight(p) * |p ∩ box| / |p|

so a patch straddling the box edge counts in proportion to the part of its area inside the box. This makes
the uniform distribution score exactly ``area(box) / image_size**2`` (:func:`uniform_share`), the baseline a
score must beat to show that attention finds the item: a score of 1 means all the mass is on patches wholly
inside the box.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from attnlab.core.errors import DataError

__all__ = ["GroundingReport", "NounGrounding", "box_mass", "grounding_report", "uniform_share"]

Box = Sequence[int]
"""``(top, left, bottom, right)`` in pixels, bottom/right exclusive."""


def _grid(patch_size: int, image_size: int) -> int:
    """Patches per side; raises ValueError unless ``patch_size`` divides ``image_size``."""
    try:
        patch, image = operator.index(patch_size), operator.index(image_size)
    except TypeError:
        raise ValueError(f"patch_size and image_size must be ints, got {patch_size!r} and {image_size!r}") from None
    if patch < 1 or image < patch or image % patch:
        raise ValueError(f"patch_size must be >= 1 and divide image_size, got patch_size={patch}, "
                         f"image_size={image}")
    return image // patch


def _check_box(box: Box, image_size: int) -> tuple[int, int, int, int]:
    try:
        top, left, bottom, right = (operator.index(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"box must be four ints (top, left, bottom, right), got {box!r}") from None
    if not (0 <= top < bottom <= image_size and 0 <= left < right <= image_size):
        raise ValueError(f"box {(top, left, bottom, right)} is empty or outside the {image_size}x{image_size} image")
    return top, left, bottom, right


def _as_distribution(weights: Any, grid: int) -> np.ndarray:
    """``weights`` (numpy or torch, ``(N,)`` or ``(gh, gw)``) as a float64 ``(gh, gw)`` array summing to 1."""
    if hasattr(weights, "detach"):  # a torch tensor, without importing torch here
        weights = weights.detach().cpu().double().numpy()
    w = np.asarray(weights, dtype=np.float64)
    if w.shape == (grid * grid,):
        w = w.reshape(grid, grid)  # (N,) -> (gh, gw), row-major
    elif w.shape != (grid, grid):
        raise ValueError(f"attention weights must have shape ({grid * grid},) or ({grid}, {grid}) for this "
                         f"patch grid, got {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("attention weights must be finite and nonnegative")
    total = w.sum()
    if total == 0:
        raise ValueError("attention weights are all zero: there is no distribution to ground")
    return w / total


def _overlap(start: int, stop: int, grid: int, patch_size: int) -> np.ndarray:
    """``(grid,)`` pixels of each patch row (or column) that fall inside ``[start, stop)``."""
    edges = np.arange(grid) * patch_size
    return np.clip(np.minimum(edges + patch_size, stop) - np.maximum(edges, start), 0, None)


def box_mass(weights: Any, box: Box, *, patch_size: int, image_size: int) -> float:
    """Fraction of the attention ``weights`` over patches that falls inside ``box`` (area-weighted; see module).

    Args:
        weights: attention over the patches at one step, ``(N,)`` row-major or ``(gh, gw)``, numpy or torch,
            nonnegative; normalised by its sum.
        box: ``(top, left, bottom, right)`` in pixels, bottom/right exclusive.
        patch_size: patch side in pixels; must divide ``image_size``.
        image_size: side of the square image in pixels.

    Raises:
        ValueError: a wrong shape, negative/non-finite or all-zero weights, or a bad box or grid.
    """
    grid = _grid(patch_size, image_size)
    top, left, bottom, right = _check_box(box, image_size)
    w = _as_distribution(weights, grid)  # (gh, gw)
    rows = _overlap(top, bottom, grid, patch_size)  # (gh,)
    cols = _overlap(left, right, grid, patch_size)  # (gw,)
    inside = np.outer(rows, cols) / patch_size**2  # (gh, gw): fraction of each patch's area inside the box
    return float((w * inside).sum())


def uniform_share(box: Box, image_size: int) -> float:
    """``area(box) / image_size**2``: what uniform attention scores under :func:`box_mass`."""
    top, left, bottom, right = _check_box(box, image_size)
    return (bottom - top) * (right - left) / image_size**2


@dataclass(frozen=True)
class NounGrounding:
    """Grounding of one noun: ``count`` steps, mean box mass ``score``, mean uniform ``baseline``."""

    count: int
    score: float
    baseline: float


@dataclass(frozen=True)
class GroundingReport:
    """Box mass per noun and over all nouns.

    Attributes:
        per_noun: noun -> its :class:`NounGrounding`, nouns sorted.
        count: number of noun steps scored.
        score: mean box mass over all steps (a micro-average: frequent nouns weigh more).
        baseline: mean uniform share over all steps (what uniform attention would score).
    """

    per_noun: dict[str, NounGrounding]
    count: int
    score: float
    baseline: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: overall count/score/baseline, then the same per noun."""
        return {"count": self.count, "score": self.score, "baseline": self.baseline,
                "per_noun": {noun: {"count": g.count, "score": g.score, "baseline": g.baseline}
                             for noun, g in self.per_noun.items()}}

    def table(self) -> str:
        """A Markdown table: one row per noun, then the micro-average over all nouns."""
        lines = ["| noun | count | grounding | uniform baseline |", "|---|---:|---:|---:|"]
        rows = [*self.per_noun.items(), ("all", NounGrounding(self.count, self.score, self.baseline))]
        lines += [f"| {noun} | {g.count} | {g.score:.3f} | {g.baseline:.3f} |" for noun, g in rows]
        return "\n".join(lines)


def grounding_report(records: Iterable[tuple[str, Any, Box]], *, patch_size: int,
                     image_size: int) -> GroundingReport:
    """Score ``(noun, weights, box)`` records with :func:`box_mass` and average them per noun and overall.

    Raises:
        DataError: no records.
        ValueError: a record that :func:`box_mass` rejects.
    """
    scores: dict[str, list[tuple[float, float]]] = {}
    for noun, weights, box in records:
        mass = box_mass(weights, box, patch_size=patch_size, image_size=image_size)
        scores.setdefault(str(noun), []).append((mass, uniform_share(box, image_size)))
    if not scores:
        raise DataError("grounding_report: no records to score")
    per_noun = {noun: NounGrounding(count=len(pairs), score=sum(m for m, _ in pairs) / len(pairs),
                                    baseline=sum(u for _, u in pairs) / len(pairs))
                for noun, pairs in sorted(scores.items())}
    every = [pair for pairs in scores.values() for pair in pairs]
    return GroundingReport(per_noun=per_noun, count=len(every), score=sum(m for m, _ in every) / len(every),
                           baseline=sum(u for _, u in every) / len(every))
