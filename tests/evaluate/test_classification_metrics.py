"""Classification metrics: hand-computed values, a loop-based oracle, scikit-learn's zero-division conventions."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.evaluate.classification import (
    ClassificationReport,
    accuracy,
    classification_report,
    confusion_matrix,
    macro_f1,
    per_class_scores,
)

FAST = settings(max_examples=200, deadline=None)


def oracle(y_true: list[int], y_pred: list[int], classes: list[int]) -> dict[int, tuple[float, float, float, int]]:
    """Per-class (precision, recall, f1, support) counted item by item, F1 as the harmonic mean (0 if undefined)."""
    out = {}
    for c in classes:
        tp = fp = fn = 0
        for t, p in zip(y_true, y_pred, strict=True):
            tp += t == c and p == c
            fp += t != c and p == c
            fn += t == c and p != c
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[c] = (precision, recall, f1, tp + fn)
    return out


def test_hand_computed_three_classes():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    assert confusion_matrix(y_true, y_pred) == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert accuracy(y_true, y_pred) == pytest.approx(4 / 6)
    precision, recall, f1, support = per_class_scores(y_true, y_pred)
    assert precision == pytest.approx([1.0, 0.5, 0.5])
    assert recall == pytest.approx([2 / 3, 0.5, 1.0])
    assert f1 == pytest.approx([0.8, 0.5, 2 / 3])
    assert support == [3, 2, 1]
    assert macro_f1(y_true, y_pred) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_absent_class_counts_as_zero_only_when_named():
    # Class 2 is neither present nor predicted: sklearn's f1_score(labels=[0, 1, 2], average="macro",
    # zero_division=0) averages (1, 1, 0) -> 2/3; without labels it averages the classes seen -> 1.
    y_true, y_pred = [0, 1, 1], [0, 1, 1]
    assert macro_f1(y_true, y_pred, num_classes=3) == pytest.approx(2 / 3)
    assert macro_f1(y_true, y_pred) == pytest.approx(1.0)
    report = classification_report(y_true, y_pred, ["a", "b", "c"])
    assert report.macro_f1 == pytest.approx(2 / 3)
    assert (report.precision[2], report.recall[2], report.f1[2], report.support[2]) == (0.0, 0.0, 0.0, 0)


def test_class_never_predicted_and_class_only_predicted():
    # sklearn: precision of a never-predicted class is 0/0 -> 0 (zero_division=0); recall of a class
    # that is predicted but absent is 0/0 -> 0; both F1 are 0.
    y_true, y_pred = [0, 0, 1], [0, 0, 2]
    precision, recall, f1, support = per_class_scores(y_true, y_pred, num_classes=3)
    assert precision == [1.0, 0.0, 0.0] and recall == [1.0, 0.0, 0.0] and f1 == [1.0, 0.0, 0.0]
    assert support == [2, 1, 0]
    assert macro_f1(y_true, y_pred) == pytest.approx(1 / 3)


def test_report_to_dict_is_json_ready():
    report = classification_report(torch.tensor([1, 0, 1, 1]), torch.tensor([1, 0, 0, 1]), ("rotten", "fresh"))
    assert isinstance(report, ClassificationReport)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["accuracy"] == pytest.approx(0.75) and data["count"] == 4
    assert data["per_class"]["fresh"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8),
                                          "support": 3}
    assert data["per_class"]["rotten"]["precision"] == pytest.approx(0.5)
    assert data["confusion"] == [[1, 0], [1, 2]]
    assert data["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert "accuracy 75.00" in report.summary()


@pytest.mark.parametrize(("call", "message"), [
    (lambda: accuracy([0, 1], [0]), "same length"),
    (lambda: macro_f1([], []), "empty"),
    (lambda: confusion_matrix([0, 1], [0, 2], num_classes=2), "outside 0..1"),
    (lambda: confusion_matrix([0, -1], [0, 0]), "label id -1"),
    (lambda: accuracy([0.0, 1.0], [0, 1]), "integer label ids"),
    (lambda: classification_report([0], [0], ["a", "a"]), "distinct"),
    (lambda: classification_report([0, 2], [0, 1], ["a", "b"]), "outside 0..1"),
])
def test_invalid_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


labels = st.integers(min_value=1, max_value=5).flatmap(
    lambda c: st.integers(min_value=1, max_value=40).flatmap(
        lambda n: st.tuples(st.just(c), st.lists(st.integers(0, c - 1), min_size=n, max_size=n),
                            st.lists(st.integers(0, c - 1), min_size=n, max_size=n))))


@FAST
@given(labels)
def test_matches_loop_oracle(case):
    num_classes, y_true, y_pred = case
    report = classification_report(y_true, y_pred, [f"c{i}" for i in range(num_classes)])
    expected = oracle(y_true, y_pred, list(range(num_classes)))
    for c in range(num_classes):
        got = (report.precision[c], report.recall[c], report.f1[c], report.support[c])
        assert got == pytest.approx(expected[c], abs=1e-12)
    assert report.macro_f1 == pytest.approx(sum(v[2] for v in expected.values()) / num_classes, abs=1e-12)
    seen = sorted(set(y_true) | set(y_pred))
    seen_oracle = oracle(y_true, y_pred, seen)
    assert macro_f1(y_true, y_pred) == pytest.approx(sum(v[2] for v in seen_oracle.values()) / len(seen), abs=1e-12)
    assert report.accuracy == pytest.approx(sum(t == p for t, p in zip(y_true, y_pred, strict=True)) / len(y_true))
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    assert sum(map(sum, matrix)) == len(y_true) and [sum(row) for row in matrix] == list(report.support)
    assert math.isclose(sum(matrix[c][c] for c in range(num_classes)) / len(y_true), report.accuracy)


@FAST
@given(labels)
def test_perfect_predictions_and_permutation_invariance(case):
    num_classes, y_true, y_pred = case
    assert accuracy(y_true, y_true) == 1.0
    assert macro_f1(y_true, y_true) == 1.0  # only classes that occur are averaged
    order = sorted(range(len(y_true)), key=lambda i: (y_pred[i], -i))
    shuffled = ([y_true[i] for i in order], [y_pred[i] for i in order])
    assert macro_f1(*shuffled, num_classes) == pytest.approx(macro_f1(y_true, y_pred, num_classes))
