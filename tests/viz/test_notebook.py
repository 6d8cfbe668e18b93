"""Attention views inline in Jupyter: the display bundle (offline, escaped, isolated), its PNG, show()."""

from __future__ import annotations

import base64
import html
import re
import sys
import types

import pytest
import torch
from torch import nn

import attnlab.viz
from attnlab.core.errors import ConfigError
from attnlab.models.base import AttentionMaps
from attnlab.viz import notebook
from attnlab.viz.capture import CaptureResult, capture
from attnlab.viz.highlight import Highlight, highlight_html
from attnlab.viz.html import html_document
from attnlab.viz.image import caption_attention_html, vit_attention_html
from attnlab.viz.notebook import PNG_SIGNATURE, InlineView, inline, inline_caption, inline_vit, show
from attnlab.viz.views import as_views
from browser_helpers import StartTags  # tests/ is on sys.path (tests/conftest.py)

IMG_TAG = "<img src=x onerror=alert(1)>"
HOSTILE = ["</script><script>alert(1)</script>", IMG_TAG, "\"dq\" 'sq'", "a & b", "我爱你", "{{JS}}"]




def _weights(n: int = len(HOSTILE)) -> torch.Tensor:
    return torch.softmax(torch.randn(2, 3, n, n, generator=torch.Generator().manual_seed(0)), -1)  # (L, H, T, T)


def _srcdoc(bundle_html: str) -> str:
    (iframe,) = [attrs for tag, attrs in StartTags(bundle_html).tags if tag == "iframe"]
    return iframe["srcdoc"]  # the parser unescapes the attribute, as a browser does


def _highlights() -> list[Highlight]:
    return [Highlight(HOSTILE, [0.1 * (i + 1) for i in range(len(HOSTILE))], "<b>pos</b>", 0.9, text="a & b"),
            Highlight(["good", "film"], [0.2, 0.8], "neg", 0.6, true_label="neg", title="<u>2</u>")]


def _image() -> torch.Tensor:
    return torch.rand(3, 24, 32, generator=torch.Generator().manual_seed(0))  # 3 x 4 patches of 8 pixels


def _vit_attention() -> torch.Tensor:
    return torch.softmax(torch.randn(1, 2, 13, 13, generator=torch.Generator().manual_seed(1)), -1)


def _assert_offline(bundle_html: str) -> None:
    """No URL, CDN, loader or external script anywhere, the page in the srcdoc included."""
    for text in (bundle_html, _srcdoc(bundle_html)):
        assert not re.search(r"https?://|//cdn|@import|url\(", text)
        assert not re.search(r"<script[^>]*\bsrc\s*=", text, re.I)
        assert "require" not in text.lower()
    sources = [attrs.get("src") for _, attrs in StartTags(bundle_html).tags if "src" in attrs]
    assert all(src.startswith("data:image/png;base64,") for src in sources)


# ------------------------------------------------------------------------------------------- the bundle


def test_bundle_holds_html_png_and_text() -> None:
    bundle = inline(_weights(), query_tokens=HOSTILE)._repr_mimebundle_()
    assert set(bundle) == {"text/html", "image/png", "text/plain"}
    png = base64.b64decode(bundle["image/png"], validate=True)
    assert png.startswith(PNG_SIGNATURE) and len(png) > 1000
    assert isinstance(bundle["image/png"], str)  # base64 text, as Jupyter stores it in the notebook
    assert "2 layers x 3 heads" in bundle["text/plain"] and "6 x 6 tokens" in bundle["text/plain"]
    tags = StartTags(bundle["text/html"]).tags
    assert [tag for tag, _ in tags] == ["div", "style", "iframe", "div", "img"]
    iframe = tags[2][1]
    assert iframe["sandbox"] == "allow-scripts"  # scripts, but not the notebook's origin
    assert tags[4][1]["src"] == "data:image/png;base64," + bundle["image/png"]


def test_bundles_are_offline() -> None:
    views = [inline(_weights(), query_tokens=HOSTILE), inline(_highlights()),
             inline_vit(_image(), _vit_attention(), patch_size=8, probabilities={"cat": 0.7, "dog": 0.3}),
             inline_caption(_image(), ["a", "dog"], torch.rand(2, 12), patch_size=8)]
    for view in views:
        _assert_offline(view._repr_mimebundle_()["text/html"])


def test_every_bundle_has_its_own_wrapper_id_and_scoped_style() -> None:
    view = inline(_weights())
    first, second = view._repr_html_(), view._repr_html_()
    other = inline(torch.eye(3))._repr_mimebundle_()["text/html"]
    ids = [re.match(r'<div id="(attnlab-[0-9a-f]{32})"', page).group(1) for page in (first, second, other)]
    assert len(set(ids)) == 3
    for uid, page in zip(ids, (first, second, other), strict=True):
        assert f"<style>#{uid} > .attnlab-fallback {{ display: none; }}</style>" in page  # only its own fallback
        assert page.count(uid) == 2


def test_srcdoc_is_exactly_the_page() -> None:
    w = _weights()
    bundle = inline(w, query_tokens=HOSTILE, title="<i>t</i>", lang="zh")._repr_mimebundle_()
    assert _srcdoc(bundle["text/html"]) == html_document(w, query_tokens=HOSTILE, title="<i>t</i>", lang="zh")
    escaped = re.search(r'srcdoc="([^"]*)"', bundle["text/html"]).group(1)  # one attribute, closed only at its end
    assert html.unescape(escaped) == html_document(w, query_tokens=HOSTILE, title="<i>t</i>", lang="zh")
    assert inline(w).html == html_document(w)  # default title and language, as write_html writes them


def test_hostile_tokens_never_appear_unescaped() -> None:
    for view in (inline(_weights(), query_tokens=HOSTILE, title=IMG_TAG), inline(_highlights(), title=IMG_TAG)):
        page = view._repr_mimebundle_()["text/html"]
        assert IMG_TAG not in page and "<img src=x" not in page and "</script>" not in page
        assert [tag for tag, _ in StartTags(page).tags] == ["div", "style", "iframe", "div", "img"]  # nothing injected
        assert IMG_TAG in view.html or "\\u003cimg src=x onerror=alert(1)\\u003e" in view.html  # still data


def test_capture_view_and_highlight_display_themselves() -> None:
    torch.manual_seed(0)
    model = nn.Transformer(8, 2, 1, 1, 16, dropout=0.0, batch_first=True).eval()
    with torch.no_grad(), capture(model, src_tokens=list("abc"), tgt_tokens=["x", IMG_TAG]) as maps:
        model(torch.randn(1, 3, 8), torch.randn(1, 2, 8))
    bundle = maps._repr_mimebundle_()
    assert set(bundle) == {"text/html", "image/png", "text/plain"}
    assert _srcdoc(bundle["text/html"]) == html_document(maps)
    assert "encoder self-attention" in bundle["text/plain"] and "cross-attention" in bundle["text/plain"]

    view = as_views(maps)[2]
    bundle = view._repr_mimebundle_()
    assert _srcdoc(bundle["text/html"]) == html_document(view)
    assert '"kind":"cross"' in _srcdoc(bundle["text/html"])

    item = _highlights()[0]
    bundle = item._repr_mimebundle_()
    assert _srcdoc(bundle["text/html"]) == highlight_html(item)
    assert base64.b64decode(bundle["image/png"]).startswith(PNG_SIGNATURE)
    assert "predicted '<b>pos</b>'" in bundle["text/plain"]


def test_views_are_accepted_as_they_are_or_relabelled() -> None:
    (view,) = as_views(torch.eye(4).expand(1, 2, 4, 4), query_tokens=list("abcd"))
    assert as_views(view) == [view] and as_views([view, view]) == [view, view]
    (relabelled,) = as_views(view, key_tokens=list("wxy"))  # one axis relabelled, cropped to its tokens
    assert relabelled.query_tokens == list("abcd") and relabelled.key_tokens == list("wxy")
    assert relabelled.weights.shape == (1, 2, 4, 3) and relabelled.heads == view.heads
    assert inline(view, key_tokens=list("wxy")).html == html_document(view, key_tokens=list("wxy"))


def test_empty_capture_falls_back_to_its_repr() -> None:
    assert CaptureResult(["attn"])._repr_mimebundle_() is None


def test_image_pages_inline() -> None:
    probabilities = {"cat": 0.3, IMG_TAG: 0.7}
    view = inline_vit(_image(), _vit_attention(), patch_size=8, probabilities=probabilities, lang="zh")
    assert view.html == vit_attention_html(_image(), _vit_attention(), patch_size=8, probabilities=probabilities,
                                           lang="zh")
    assert view.png.startswith(PNG_SIGNATURE) and f"predicted {IMG_TAG!r}" in view.text
    maps, boxes = torch.rand(2, 12, generator=torch.Generator().manual_seed(2)), [None, (0, 8, 16, 24)]
    view = inline_caption(_image(), ["a", "dog"], maps, patch_size=8, boxes=boxes, title="t")
    assert view.html == caption_attention_html(_image(), ["a", "dog"], maps, patch_size=8, boxes=boxes, title="t")
    assert view.png.startswith(PNG_SIGNATURE) and _srcdoc(view._repr_html_()) == view.html


def test_from_page_takes_bytes_a_figure_or_nothing() -> None:
    from attnlab.viz.heatmap import plot_attention

    page = html_document(torch.eye(2))
    from_figure = InlineView.from_page(page, plot_attention(torch.eye(2)), "eye", height=300)
    assert from_figure.png.startswith(PNG_SIGNATURE) and from_figure.height == 300
    assert InlineView.from_page(page, from_figure.png).png == from_figure.png
    bare = InlineView.from_page(page)
    assert set(bare._repr_mimebundle_()) == {"text/html", "text/plain"} and bare._repr_png_() is None
    assert "<img" not in bare._repr_html_() and "interactive only" in bare._repr_html_()
    with pytest.raises(ConfigError, match="PNG"):
        InlineView(page, b"GIF89a", "x")
    with pytest.raises(ConfigError, match="Figure"):
        InlineView.from_page(page, "picture.png")


def test_height_is_estimated_or_given() -> None:
    short, long = inline(torch.eye(3)), inline(torch.eye(60))
    assert 240 <= short.height < long.height <= 1000
    assert f'height="{short.height}"' in short._repr_html_()
    assert inline(torch.eye(3), height=777).height == 777
    assert 'height="777"' in inline(torch.eye(3), height=777)._repr_html_()
    assert inline(short, height=321).height == 321 and inline(short) is short
    for bad in (0, -5, 2.5, True, "600"):
        with pytest.raises(ConfigError, match="height"):
            inline(torch.eye(3), height=bad)


def test_without_matplotlib_there_is_no_picture(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notebook, "_has_matplotlib", lambda: False)
    for view in (inline(torch.eye(3)), inline(_highlights())):
        bundle = view._repr_mimebundle_()
        assert view.png is None and set(bundle) == {"text/html", "text/plain"}
        assert "<img" not in bundle["text/html"]


def test_include_and_exclude_filter_the_bundle() -> None:
    view = inline(torch.eye(3))
    assert set(view._repr_mimebundle_(include={"text/plain"})) == {"text/plain"}
    assert set(view._repr_mimebundle_(exclude={"image/png"})) == {"text/html", "text/plain"}


def test_wrong_arguments_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="a Highlight holds its own tokens"):
        inline(_highlights(), query_tokens=["a"])
    with pytest.raises(ValueError, match="unknown lang 'fr'.*'en', 'zh'"):
        inline(torch.eye(3), lang="fr")
    with pytest.raises(ValueError, match="unknown lang"):
        show(torch.eye(3), lang="de")


def test_real_ipython_formatter_uses_the_bundle() -> None:
    formatters = pytest.importorskip("IPython.core.formatters")
    view = as_views(AttentionMaps(cross=torch.full((1, 1, 2, 3, 4), 0.25)))[0]
    data, _ = formatters.DisplayFormatter().format(view)
    assert set(data) == {"text/html", "image/png", "text/plain"}
    assert _srcdoc(data["text/html"]) == html_document(view)
    assert base64.b64decode(data["image/png"]).startswith(PNG_SIGNATURE)
    assert data["text/plain"].startswith("attnlab attention viewer")


# -------------------------------------------------------------------------------------------------- show


def test_show_displays_the_inline_view(monkeypatch: pytest.MonkeyPatch) -> None:
    shown = []
    fake = types.ModuleType("IPython.display")
    fake.display = shown.append
    monkeypatch.setitem(sys.modules, "IPython", types.ModuleType("IPython"))
    monkeypatch.setitem(sys.modules, "IPython.display", fake)
    assert show(torch.eye(3), query_tokens=list("abc"), title="t", lang="zh", height=400) is None
    (view,) = shown
    assert isinstance(view, InlineView) and view.height == 400
    assert view.html == html_document(torch.eye(3), query_tokens=list("abc"), title="t", lang="zh")


def test_show_without_ipython_says_what_to_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "IPython", None)  # import IPython now raises ImportError
    monkeypatch.setitem(sys.modules, "IPython.display", None)
    with pytest.raises(ConfigError, match=r"needs IPython.*inline\(\.\.\.\).*write_html") as info:
        show(torch.eye(3))
    assert "\n" not in str(info.value)


def test_exported_from_attnlab_viz() -> None:
    assert attnlab.viz.show is show and attnlab.viz.inline is inline and attnlab.viz.InlineView is InlineView
    assert {"show", "inline", "InlineView", "inline_vit", "inline_caption"} <= set(attnlab.viz.__all__)


def test_several_examples_show_inline_in_one_page() -> None:
    import torch

    from attnlab.viz import Example, inline

    examples = [Example(torch.softmax(torch.randn(2, 3, 4), -1), ["a", "b", "c"], ["w", "x", "y", "z"],
                        name=f"sentence {i}", prediction=f"guess {i}") for i in range(3)]
    view = inline(examples)
    assert all(f"sentence {i}" in view.html for i in range(3))
    assert view.png is not None and view.png.startswith(b"\x89PNG")
