"""Static figures: formats, CJK labels without missing glyphs, grids, selection, long sequences."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from attnlab.core.errors import ConfigError, DataError
from attnlab.models.base import AttentionMaps
from attnlab.viz import fonts
from attnlab.viz.capture import capture
from attnlab.viz.heatmap import plot_attention

SRC = ["我", "爱", "自然", "语言", "处理", "。"]
TGT = ["I", "love", "NLP", "日本語", "한국어"]


def _weights(*shape: int) -> torch.Tensor:
    return torch.softmax(torch.randn(*shape, generator=torch.Generator().manual_seed(0)), dim=-1)


def _panels(fig) -> list:
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def test_matplotlib_warns_about_missing_glyphs_without_our_fonts(tmp_path: Path) -> None:
    """The detector the next test relies on: DejaVu Sans alone cannot draw Chinese, and matplotlib says so."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure()
    FigureCanvasAgg(fig)
    fig.text(0.5, 0.5, "我爱自然语言处理", family="DejaVu Sans")
    with pytest.warns(UserWarning, match="missing from font"):
        fig.savefig(tmp_path / "plain.png")


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf"])
def test_cjk_labels_render_without_missing_glyphs(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"alignment{suffix}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any "Glyph ... missing from font(s)" warning fails the test
        fig = plot_attention(_weights(5, 6), TGT, SRC, path, title="对齐 · alignment")
    ax = _panels(fig)[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == SRC  # drawn as given, not replaced by boxes
    assert [t.get_text() for t in ax.get_yticklabels()] == TGT
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" if suffix == ".png" else True
    assert data[:5] == b"%PDF-" if suffix == ".pdf" else True
    if suffix == ".svg":
        text = data.decode("utf-8")
        assert text.lstrip().startswith("<?xml") and "NotoSansCJK" in text.replace(" ", "")  # CJK glyph outlines


def test_uncovered_characters_become_boxes_not_warnings(tmp_path: Path) -> None:
    tokens = ["ok", "🦜", "👍🏽x", "$\\frac{$"]  # glyphs no font has, a skin-tone modifier, broken mathtext
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plot_attention(_weights(4, 4), tokens, tokens, tmp_path / "odd.png")
    labels = [t.get_text() for t in _panels(fig)[0].get_xticklabels()]
    assert labels == ["ok", fonts.MISSING, fonts.MISSING + "x", "$\\frac{$"]
    assert fonts.covered("我") and fonts.covered("한")


def test_grid_of_layers_and_heads_and_selection(tmp_path: Path) -> None:
    w = _weights(2, 3, 4, 4)
    fig = plot_attention(w, list("abcd"), list("abcd"))
    panels = _panels(fig)
    assert len(panels) == 6 and len(fig.axes) == 7  # 2 x 3 panels and one shared colour bar
    assert panels[4].get_title() == "layer 1 \N{MIDDLE DOT} head 1"
    assert len(_panels(plot_attention(w[0], list("abcd")))) == 3  # (H, Tq, Tk): one row of heads
    one = plot_attention(w, list("abcd"), layer=-1, head=2)
    assert len(_panels(one)) == 1
    assert _panels(one)[0].get_title() == "attention \N{MIDDLE DOT} layer 1 \N{MIDDLE DOT} head 2"
    image = _panels(one)[0].get_images()[0].get_array()
    assert torch.allclose(torch.as_tensor(image.data), w[1, 2])
    mean = plot_attention(w, list("abcd"), layer=0, head="mean")
    assert torch.allclose(torch.as_tensor(_panels(mean)[0].get_images()[0].get_array().data), w[0].mean(0))


def test_out_of_range_and_bad_inputs(tmp_path: Path) -> None:
    w = _weights(2, 3, 4, 4)
    with pytest.raises(ConfigError, match=r"layer 2 is out of range: the attention has 2 layers \(0-1\)"):
        plot_attention(w, layer=2)
    with pytest.raises(ConfigError, match="head 3 is out of range"):
        plot_attention(w, head=3)
    with pytest.raises(ConfigError, match=r"\.png, \.svg or \.pdf"):
        plot_attention(w, path=tmp_path / "x.jpg")
    with pytest.raises(DataError, match="5 query and 5 key tokens"):
        plot_attention(w, list("abcde"))
    with pytest.raises(DataError, match="got shape"):
        plot_attention(torch.ones(4))


def test_fewer_tokens_crop_padding() -> None:
    w = _weights(6, 6)
    fig = plot_attention(w, ["a", "b", "c"], ["x", "y"])
    assert _panels(fig)[0].get_images()[0].get_array().shape == (3, 2)


def test_long_sequence_labels_are_thinned_and_size_bounded(tmp_path: Path) -> None:
    tokens = [f"token{i}" for i in range(300)]
    fig = plot_attention(_weights(300, 300), tokens, tokens, tmp_path / "long.png", max_labels=40, dpi=30)
    ax = _panels(fig)[0]
    shown = [t.get_text() for t in ax.get_xticklabels()]
    assert 20 <= len(shown) <= 40 and shown[0] == "token0" and shown[1] == "token8"
    width, height = fig.get_size_inches()
    assert width < 40 and height < 40


def test_capture_result_and_attention_maps() -> None:
    torch.manual_seed(0)
    model = nn.Transformer(8, 2, 1, 1, 16, dropout=0.0, batch_first=True).eval()
    with torch.no_grad(), capture(model, src_tokens=list("abcde"), tgt_tokens=list("XYZ")) as maps:
        model(torch.randn(1, 5, 8), torch.randn(1, 3, 8))
    fig = plot_attention(maps, head=1)  # cross-attention by default
    ax = _panels(fig)[0]
    assert ax.get_xlabel() == "source (keys)"
    assert [t.get_text() for t in ax.get_xticklabels()] == list("abcde")
    assert [t.get_text() for t in ax.get_yticklabels()] == list("XYZ")
    enc = plot_attention(maps.to_maps(), list("XYZ"), list("abcde"), kind="encoder", head=0)
    assert [t.get_text() for t in _panels(enc)[0].get_yticklabels()] == list("abcde")
    with pytest.raises(ConfigError, match="no decoder attention here"):
        plot_attention(AttentionMaps(cross=torch.ones(1, 1, 1, 2, 2)), kind="decoder")


def test_a_selected_layer_keeps_its_own_number_in_the_panel_titles() -> None:
    """``layer=-1`` of a 3-layer capture is labelled "layer 2" (its module path), not "layer 0" (its new index)."""
    layer = torch.nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True)
    model = torch.nn.TransformerEncoder(layer, num_layers=3, enable_nested_tensor=False).eval()
    with torch.no_grad(), capture(model) as maps:
        model(torch.randn(1, 4, 8))
    fig = plot_attention(maps, list("abcd"), list("abcd"), layer=-1)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles and all(t.startswith("layer 2") for t in titles), titles


@pytest.mark.parametrize("title", ["$x^2$", r"$\frac{$", "50% of $5 and $10"])
def test_grid_title_is_drawn_literally(title: str, tmp_path: Path) -> None:
    """The layers x heads grid's title, like the single panel's, is text, never mathtext (invalid math used to
    crash the save)."""
    fig = plot_attention(torch.rand(2, 2, 3, 3), list("abc"), list("abc"), tmp_path / "g.svg", title=title)
    assert fig.texts and fig.texts[0].get_text() == title
    assert fig.texts[0].get_parse_math() is False
