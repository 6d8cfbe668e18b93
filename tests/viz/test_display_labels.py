"""Tokens as drawn: SentencePiece's "▁" is shown as "␣" in every figure and page, the tokens themselves unchanged."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import torch

from attnlab.data.tokenize import SPACE_TOKEN, CharTokenizer
from attnlab.viz import fonts
from attnlab.viz.heatmap import plot_attention
from attnlab.viz.highlight import Highlight, highlight_html, plot_highlight
from attnlab.viz.html import html_document
from attnlab.viz.labels import VISIBLE_SPACE, display_token, display_tokens

PIECES = ["▁the", "▁house", "s", "▁", "<▁>", "我"]
SHOWN = ["␣the", "␣house", "s", "␣", "<▁>", "我"]


def _data(page: str, block: str) -> dict:
    m = re.search(rf'<script type="application/json" id="{block}">(.*?)</script>', page, re.S)
    assert m is not None
    return json.loads(m.group(1))


@pytest.mark.parametrize(("token", "shown"), [
    ("▁", "␣"), ("▁house", "␣house"), ("▁▁", "␣␣"), ("house", "house"), ("a▁b", "a▁b"),
    ("<▁>", "<▁>"),  # a literal "▁" in the text (tokenize.LITERAL_SPACE_TOKEN) must not look like a space
    ("", ""), ("␣", "␣"),
])
def test_one_display_rule(token: str, shown: str) -> None:
    assert display_token(token) == shown


def test_the_tokens_themselves_keep_the_marker() -> None:
    tokens = CharTokenizer().tokenize("a b")
    assert SPACE_TOKEN == "\u2581" and VISIBLE_SPACE == "\u2423"
    assert tokens == ["a", SPACE_TOKEN, "b"] and display_tokens(tokens) == ["a", VISIBLE_SPACE, "b"]


def test_our_fonts_draw_the_visible_space() -> None:
    assert fonts.covered(VISIBLE_SPACE) and fonts.renderable(VISIBLE_SPACE) == VISIBLE_SPACE


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_heatmap_labels_show_the_visible_space_without_missing_glyphs(tmp_path: Path, suffix: str) -> None:
    weights = torch.softmax(torch.randn(6, 6, generator=torch.Generator().manual_seed(0)), -1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a "Glyph ... missing from font(s)" warning fails the test
        fig = plot_attention(weights, PIECES, PIECES, tmp_path / f"pieces{suffix}")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == SHOWN
    assert [t.get_text() for t in ax.get_yticklabels()] == SHOWN
    grid = plot_attention(torch.stack([weights, weights]), PIECES, PIECES)  # (H, Tq, Tk): a row of heads
    assert [t.get_text() for t in grid.axes[0].get_yticklabels()] == SHOWN


def test_highlight_figure_and_page_show_the_visible_space(tmp_path: Path) -> None:
    item = Highlight(PIECES, [0.1, 0.3, 0.1, 0.05, 0.05, 0.4], "pos", 0.8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plot_highlight(item, tmp_path / "highlight.png")
    drawn = {t.get_gid(): t.get_text() for t in fig.axes[0].texts if (t.get_gid() or "").startswith("text-")}
    assert [drawn[f"text-0-{i}"] for i in range(len(PIECES))] == SHOWN
    assert _data(highlight_html(item), "attnlab-highlight-data")["examples"][0]["tokens"] == SHOWN
    assert item.tokens == PIECES  # the data keep the marker


def test_viewer_labels_show_the_visible_space() -> None:
    page = html_document(torch.eye(6), query_tokens=PIECES, key_tokens=PIECES[::-1])
    view = _data(page, "attnlab-data")["views"][0]
    assert view["queryTokens"] == SHOWN and view["keyTokens"] == SHOWN[::-1]
