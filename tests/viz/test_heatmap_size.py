"""The size cap of heatmaps: 2,000 tokens give a figure image libraries open, with labels that fit and say where
they are; small inputs keep every label."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from attnlab.viz.heatmap import MAX_PIXELS, plot_attention


def _weights(*shape: int) -> torch.Tensor:
    return torch.softmax(torch.randn(*shape, generator=torch.Generator().manual_seed(0)), dim=-1)


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def _labels(fig, axis: str) -> list[str]:
    ax = fig.axes[0]
    return [t.get_text() for t in (ax.get_xticklabels() if axis == "x" else ax.get_yticklabels())]


@pytest.mark.timeout(180)  # unbounded, this took 75 s and wrote 24,000 x 24,000 pixels
def test_two_thousand_tokens_stay_within_the_cap(tmp_path: Path) -> None:
    tokens = [f"▁w{i}" for i in range(2000)]
    path = tmp_path / "long.png"
    fig = plot_attention(_weights(2000, 2000), tokens, tokens, path, max_labels=10_000)
    width, height = _png_size(path)
    assert max(width, height) <= MAX_PIXELS and min(width, height) > MAX_PIXELS // 2
    for axis in ("x", "y"):
        shown = _labels(fig, axis)
        assert 50 <= len(shown) <= 400  # thinned to what fits, not 2,000 overlapping labels
        found = [re.fullmatch(r"#(\d+) ␣w(\d+)", s) for s in shown]
        assert all(found) and all(m.group(1) == m.group(2) for m in found)  # every label says its position
        step = int(found[1].group(1))
        assert [int(m.group(1)) for m in found] == list(range(0, 2000, step))


@pytest.mark.parametrize("n", [5, 40])
def test_small_inputs_keep_every_label(tmp_path: Path, n: int) -> None:
    tokens = [f"t{i}" for i in range(n)]
    fig = plot_attention(_weights(n, n), tokens, tokens, tmp_path / "small.png")
    assert _labels(fig, "x") == _labels(fig, "y") == tokens
    assert max(_png_size(tmp_path / "small.png")) <= MAX_PIXELS


def test_the_cap_holds_at_high_dpi_and_for_grids(tmp_path: Path) -> None:
    tokens = [f"t{i}" for i in range(60)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_attention(_weights(60, 60), tokens, tokens, tmp_path / "dpi.png", dpi=600)
        plot_attention(_weights(2, 40, 8, 8), list("abcdefgh"), path=tmp_path / "heads.png")  # 2 layers x 40 heads
    for name in ("dpi.png", "heads.png"):
        assert max(_png_size(tmp_path / name)) <= MAX_PIXELS, name
