"""Classification metrics on label ids: accuracy, confusion matrix, per-class precision/recall/F1, macro-F1.

Pure functions on sequences of integer label ids (lists, or anything with ``.tolist()`` such as a tensor of
shape ``(N,)``), following scikit-learn's definitions (``sklearn.metrics``) with ``zero_division=0``:

* precision of class ``c`` = ``tp / (tp + fp)``, recall = ``tp / (tp + fn)``, and
  F1 = ``2 tp / (2 tp + fp + fn)`` (the harmonic mean of the two); a ratio whose denominator is 0 is 0.
* macro-F1 is the unweighted mean of the per-class F1 over the classes ``0 .. num_classes - 1``. A class that
  is neither present nor predicted has F1 = 0 and still counts in the mean, as in
  ``f1_score(y_true, y_pred, labels=range(num_classes), average="macro", zero_division=0)``. Without
  ``num_classes``, :func:`macro_f1` averages over the classes that occur in ``y_true`` or ``y_pred``, as
  ``f1_score(y_true, y_pred, average="macro", zero_division=0)`` does.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ClassificationReport", "accuracy", "classification_report", "confusion_matrix", "macro_f1",
           "per_class_scores"]


def _ids(values: Any, name: str) -> list[int]:
    if hasattr(values, "tolist"):
        values = values.tolist()
    try:
        return [operator.index(v) for v in values]
    except TypeError as exc:
        raise ValueError(f"{name}: expected integer label ids, got {exc}") from exc


def _check(y_true: Any, y_pred: Any, num_classes: int | None = None) -> tuple[list[int], list[int], int]:
    """Validated ``(y_true, y_pred, num_classes)``; ``num_classes`` defaults to the largest id + 1."""
    true, pred = _ids(y_true, "y_true"), _ids(y_pred, "y_pred")
    if len(true) != len(pred):
        raise ValueError(f"y_true has {len(true)} labels but y_pred has {len(pred)}: they must be the same length")
    if not true:
        raise ValueError("no labels: y_true and y_pred are empty")
    low, high = min(min(true), min(pred)), max(max(true), max(pred))
    if num_classes is None:
        num_classes = high + 1
    elif num_classes < 1:
        raise ValueError(f"num_classes: got {num_classes}, expected at least 1")
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise ValueError(f"label id {bad} is outside 0..{num_classes - 1}")
    return true, pred, num_classes


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Fraction of positions where ``y_pred`` equals ``y_true``, in [0, 1]."""
    true, pred, _ = _check(y_true, y_pred)
    return sum(t == p for t, p in zip(true, pred, strict=True)) / len(true)


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int | None = None) -> list[list[int]]:
    """``(C, C)`` counts: entry ``[t][p]`` is the number of items of true class ``t`` predicted as ``p``.

    Rows are true classes and columns predictions, as in ``sklearn.metrics.confusion_matrix``. ``C`` is
    ``num_classes``, or the largest id in either sequence + 1.
    """
    true, pred, num_classes = _check(y_true, y_pred, num_classes)
    matrix = [[0] * num_classes for _ in range(num_classes)]
    for t, p in zip(true, pred, strict=True):
        matrix[t][p] += 1
    return matrix


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0  # zero_division=0


def _scores(matrix: list[list[int]]) -> tuple[list[float], list[float], list[float], list[int]]:
    """Per-class precision, recall, F1 and support from a confusion matrix (rows true, columns predicted)."""
    num_classes = len(matrix)
    precision, recall, f1, support = [], [], [], []
    for c in range(num_classes):
        tp = matrix[c][c]
        fn = sum(matrix[c]) - tp
        fp = sum(matrix[t][c] for t in range(num_classes)) - tp
        precision.append(_ratio(tp, tp + fp))
        recall.append(_ratio(tp, tp + fn))
        f1.append(_ratio(2 * tp, 2 * tp + fp + fn))
        support.append(tp + fn)
    return precision, recall, f1, support


def per_class_scores(y_true: Sequence[int], y_pred: Sequence[int],
                     num_classes: int | None = None) -> tuple[list[float], list[float], list[float], list[int]]:
    """``(precision, recall, f1, support)``, each a list of length ``C`` (see the module docstring)."""
    return _scores(confusion_matrix(y_true, y_pred, num_classes))


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int | None = None) -> float:
    """Unweighted mean of the per-class F1 (``zero_division=0``), in [0, 1].

    With ``num_classes``, the mean is over all classes ``0 .. num_classes - 1`` (an absent, never predicted
    class adds 0); without it, over the classes occurring in ``y_true`` or ``y_pred``, as scikit-learn does.
    """
    true, pred, n = _check(y_true, y_pred, num_classes)
    _, _, f1, _ = _scores(confusion_matrix(true, pred, n))
    classes = range(n) if num_classes is not None else sorted(set(true) | set(pred))
    return sum(f1[c] for c in classes) / len(classes)


@dataclass(frozen=True)
class ClassificationReport:
    """Scores of predictions against true labels.

    Attributes:
        label_names: name of each class; class ``c`` is ``label_names[c]``.
        accuracy: fraction correct.
        macro_f1: mean of ``f1`` over all classes (absent, never predicted classes count as 0).
        precision, recall, f1: per class, ``zero_division=0``.
        support: number of true items per class.
        count: number of items.
        confusion: ``[true][predicted]`` counts.
    """

    label_names: tuple[str, ...]
    accuracy: float
    macro_f1: float
    precision: tuple[float, ...]
    recall: tuple[float, ...]
    f1: tuple[float, ...]
    support: tuple[int, ...]
    count: int
    confusion: tuple[tuple[int, ...], ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: overall scores, then per class (by name) precision/recall/f1/support, then the matrix."""
        per_class = {name: {"precision": self.precision[c], "recall": self.recall[c], "f1": self.f1[c],
                            "support": self.support[c]} for c, name in enumerate(self.label_names)}
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "count": self.count,
                "per_class": per_class, "confusion": [list(row) for row in self.confusion]}

    def summary(self) -> str:
        """One line for logs: accuracy and macro-F1 in percent, and the count."""
        return f"accuracy {100 * self.accuracy:.2f}, macro-F1 {100 * self.macro_f1:.2f} ({self.count} items)"


def classification_report(y_true: Sequence[int], y_pred: Sequence[int],
                          label_names: Sequence[str]) -> ClassificationReport:
    """Every score of :class:`ClassificationReport`, over the classes ``0 .. len(label_names) - 1``.

    Raises:
        ValueError: lengths differ, no items, duplicate label names, or a label id outside the classes.
    """
    names = tuple(label_names)
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"label_names must be distinct and non-empty, got {names!r}")
    true, pred, n = _check(y_true, y_pred, len(names))
    matrix = confusion_matrix(true, pred, n)
    precision, recall, f1, support = _scores(matrix)
    return ClassificationReport(
        label_names=names, accuracy=accuracy(true, pred), macro_f1=sum(f1) / n, precision=tuple(precision),
        recall=tuple(recall), f1=tuple(f1), support=tuple(support), count=len(true),
        confusion=tuple(tuple(row) for row in matrix))
