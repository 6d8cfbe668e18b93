"""Attention grounding: box mass against hand-computed cases, the uniform baseline, input forms, the report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from attnlab.core.errors import DataError
from attnlab.evaluate.grounding import box_mass, grounding_report, uniform_share

P, S = 8, 64  # patch size, image size: an 8x8 grid of patches
G = S // P


def one_hot(row: int, col: int) -> np.ndarray:
    w = np.zeros((G, G))
    w[row, col] = 1.0
    return w


def pixel_oracle(weights: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Independent loop oracle: spread each patch's weight evenly over its pixels and sum the pixels in the box."""
    w = np.asarray(weights, dtype=float).reshape(G, G)
    w = w / w.sum()
    top, left, bottom, right = box
    total = 0.0
    for y in range(top, bottom):
        for x in range(left, right):
            total += w[y // P, x // P] / (P * P)
    return total


def test_all_mass_on_patches_inside_the_box_scores_one():
    box = (8, 16, 32, 40)  # patch rows 1..3, patch columns 2..4, aligned to the grid
    w = np.zeros((G, G))
    w[1:4, 2:5] = np.arange(1, 10).reshape(3, 3)  # not uniform, not normalised
    assert box_mass(w, box, patch_size=P, image_size=S) == pytest.approx(1.0, abs=1e-12)
    w[0, 0] = 1.0  # one patch wholly outside
    assert box_mass(w, box, patch_size=P, image_size=S) == pytest.approx(45 / 46, abs=1e-12)


@pytest.mark.parametrize("box", [(8, 16, 32, 40), (0, 0, 64, 64), (3, 5, 30, 61), (10, 13, 11, 14), (57, 0, 64, 9)])
def test_uniform_attention_scores_exactly_the_box_share(box):
    top, left, bottom, right = box
    share = (bottom - top) * (right - left) / S**2
    assert uniform_share(box, S) == share
    for weights in (np.full(G * G, 1 / G**2), np.ones((G, G))):
        assert box_mass(weights, box, patch_size=P, image_size=S) == pytest.approx(share, rel=1e-12, abs=1e-15)


def test_one_hot_on_a_straddling_patch_scores_its_overlap_fraction():
    box = (4, 10, 20, 30)  # patch (0, 1) covers rows 0..7 and columns 8..15: overlap rows 4..7, columns 10..15
    assert box_mass(one_hot(0, 1), box, patch_size=P, image_size=S) == pytest.approx(4 * 6 / 64, abs=1e-12)
    assert box_mass(one_hot(1, 2), box, patch_size=P, image_size=S) == pytest.approx(1.0, abs=1e-12)  # inside
    assert box_mass(one_hot(2, 3), box, patch_size=P, image_size=S) == pytest.approx(4 * 6 / 64, abs=1e-12)
    assert box_mass(one_hot(3, 1), box, patch_size=P, image_size=S) == 0.0  # outside


def test_box_mass_matches_a_pixel_loop_oracle_on_random_cases():
    rng = np.random.default_rng(0)
    for _ in range(50):
        weights = rng.random((G, G)) ** 3
        top, left = rng.integers(0, S - 1, size=2)
        box = (int(top), int(left), int(rng.integers(top + 1, S + 1)), int(rng.integers(left + 1, S + 1)))
        assert box_mass(weights, box, patch_size=P, image_size=S) == pytest.approx(pixel_oracle(weights, box),
                                                                                   rel=1e-10)


def test_torch_numpy_flat_and_grid_inputs_agree():
    rng = np.random.default_rng(1)
    grid = rng.random((G, G))
    box = (5, 9, 41, 50)
    expected = box_mass(grid, box, patch_size=P, image_size=S)
    variants = [grid.reshape(-1), torch.from_numpy(grid), torch.from_numpy(grid).reshape(-1),
                torch.from_numpy(grid).float().requires_grad_(), grid.tolist()]
    for weights in variants:
        assert box_mass(weights, box, patch_size=P, image_size=S) == pytest.approx(expected, rel=1e-6)
    assert box_mass(torch.from_numpy(grid.reshape(-1)), box, patch_size=P, image_size=S) == expected  # same float64


def test_flat_weights_are_read_row_major():
    flat = np.zeros(G * G)
    flat[1] = 1.0  # row 0, column 1
    assert box_mass(flat, (0, 8, 8, 16), patch_size=P, image_size=S) == 1.0
    assert box_mass(flat, (8, 0, 16, 8), patch_size=P, image_size=S) == 0.0


@pytest.mark.parametrize(("weights", "match"), [
    (np.ones(G * G - 1), "shape"),
    (np.ones((G, G + 1)), "shape"),
    (np.ones((1, G, G)), "shape"),
    (np.zeros((G, G)), "all zero"),
    (-np.ones((G, G)), "nonnegative"),
    (np.full((G, G), np.nan), "finite"),
])
def test_bad_weights_raise(weights, match):
    with pytest.raises(ValueError, match=match):
        box_mass(weights, (0, 0, 8, 8), patch_size=P, image_size=S)


@pytest.mark.parametrize(("box", "patch_size", "image_size", "match"), [
    ((0, 0, 0, 8), P, S, "empty or outside"),
    ((0, 0, 8, 65), P, S, "empty or outside"),
    ((-1, 0, 8, 8), P, S, "empty or outside"),
    ((0, 0, 8), P, S, "four ints"),
    ((0, 0, 8.5, 8), P, S, "four ints"),
    ((0, 0, 8, 8), 7, S, "divide"),
    ((0, 0, 8, 8), 0, S, "divide"),
])
def test_bad_boxes_and_grids_raise(box, patch_size, image_size, match):
    with pytest.raises(ValueError, match=match):
        box_mass(np.ones((G, G)), box, patch_size=patch_size, image_size=image_size)


def test_report_averages_by_hand():
    box_a, box_b = (0, 0, 8, 8), (0, 0, 32, 32)  # shares 1/64 and 1/4
    records = [
        ("bag", one_hot(0, 0), box_a),  # 1.0
        ("bag", np.ones((G, G)), box_b),  # 0.25 (uniform)
        ("top", one_hot(7, 7), box_b),  # 0.0
    ]
    report = grounding_report(records, patch_size=P, image_size=S)
    assert list(report.per_noun) == ["bag", "top"]
    bag, top = report.per_noun["bag"], report.per_noun["top"]
    assert (bag.count, top.count, report.count) == (2, 1, 3)
    assert bag.score == pytest.approx((1.0 + 0.25) / 2) and bag.baseline == pytest.approx((1 / 64 + 1 / 4) / 2)
    assert top.score == 0.0 and top.baseline == pytest.approx(1 / 4)
    assert report.score == pytest.approx((1.0 + 0.25 + 0.0) / 3)  # micro: not the mean of the two noun means
    assert not math.isclose(report.score, (bag.score + top.score) / 2)
    assert report.baseline == pytest.approx((1 / 64 + 1 / 4 + 1 / 4) / 3)

    data = json.loads(json.dumps(report.to_dict()))
    assert data["count"] == 3 and data["per_noun"]["bag"]["count"] == 2
    assert data["score"] == pytest.approx(report.score) and data["per_noun"]["top"]["baseline"] == pytest.approx(0.25)

    lines = report.table().splitlines()
    assert lines[0] == "| noun | count | grounding | uniform baseline |"
    assert lines[2] == "| bag | 2 | 0.625 | 0.133 |"
    assert lines[3] == "| top | 1 | 0.000 | 0.250 |"
    assert lines[4] == "| all | 3 | 0.417 | 0.172 |"


def test_report_accepts_a_generator_and_rejects_no_records():
    report = grounding_report((("boot", np.ones(G * G), (0, 0, 64, 64)) for _ in range(2)), patch_size=P, image_size=S)
    assert report.count == 2 and report.score == pytest.approx(1.0)
    with pytest.raises(DataError, match="no records"):
        grounding_report([], patch_size=P, image_size=S)
    with pytest.raises(ValueError, match="shape"):
        grounding_report([("bag", np.ones(3), (0, 0, 8, 8))], patch_size=P, image_size=S)
