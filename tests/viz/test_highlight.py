"""Highlighted tokens of a classified text: validation, figures (literal text, CJK, colours, wrapping), the page."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import re
import warnings
from pathlib import Path

import pytest
import torch

from attnlab.core.errors import ConfigError, DataError
from attnlab.viz.highlight import Highlight, highlight_html, plot_highlight, space_before, write_highlight_html

HOSTILE = ["<script>alert(1)</script>", "</script>", "&amp;", "\"dq\" 'sq'", "<img src=x onerror=alert(1)>", "我",
           "爱", "你"]
ZH = ["这", "部", "电", "影", "很", "精", "彩", "！"]


def _load_browser_helpers():
    """tests/viz/test_browser.py as a module of helpers (its headless Chromium fixture), under a private name."""
    path = Path(__file__).with_name("test_browser.py")
    spec = importlib.util.spec_from_file_location("_attnlab_browser_helpers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_BROWSER = _load_browser_helpers()
devtools = _BROWSER.devtools  # the same DevTools-protocol fixture as the viewer's browser test


def _boxes(fig, example: int = 0) -> list:
    """The token boxes of one example, in token order."""
    found = {}
    for patch in fig.axes[0].patches:
        m = re.fullmatch(rf"token-{example}-(\d+)", patch.get_gid() or "")
        if m:
            found[int(m.group(1))] = patch
    return [found[i] for i in range(len(found))]


def _token_texts(fig, example: int = 0) -> list[str]:
    texts = {t.get_gid(): t.get_text() for t in fig.axes[0].texts if (t.get_gid() or "").startswith("text-")}
    return [texts[f"text-{example}-{i}"] for i in range(sum(k.startswith(f"text-{example}-") for k in texts))]


def _intensity(rgba) -> float:
    """1 - relative luminance: darker backgrounds are more intense."""
    return 1.0 - (0.2126 * rgba[0] + 0.7152 * rgba[1] + 0.0722 * rgba[2])


def _data(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="attnlab-highlight-data">(.*?)</script>', page, re.S)
    assert m is not None
    return json.loads(m.group(1))


# ------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"weights": [0.5, 0.5]}, "3 tokens but 2 weights"),
    ({"weights": [0.1, float("nan"), 0.2]}, "weight 1 is nan: weights must be finite and >= 0"),
    ({"weights": [0.1, 0.2, float("inf")]}, "weight 2 is inf"),
    ({"weights": [0.1, -0.2, 0.3]}, "weight 1 is -0.2"),
    ({"weights": torch.ones(3, 1)}, r"shape \(T,\), got shape \(3, 1\)"),
    ({"weights": ["a", "b", "c"]}, "list of numbers or a tensor"),
    ({"tokens": "abc"}, "not one string"),
    ({"tokens": ["a", 2, "c"]}, "token 1 has type int, not str"),
    ({"tokens": [], "weights": []}, "at least one token"),
    ({"probability": 1.5}, r"probability 1\.5 is not in \[0, 1\]"),
    ({"probability": float("nan")}, r"probability nan is not in \[0, 1\]"),
    ({"probability": "0.5"}, "probability must be a number"),
    ({"label": 1}, "label must be a string, got int"),
    ({"true_label": 0}, "true_label must be a string or None"),
])
def test_invalid_highlights_are_one_line_data_errors(kwargs: dict, message: str) -> None:
    args = {"tokens": ["a", "b", "c"], "weights": [0.2, 0.3, 0.5], "label": "pos", "probability": 0.9} | kwargs
    with pytest.raises(DataError, match=message) as info:
        Highlight(**args)
    assert "\n" not in str(info.value)


def test_errors_never_echo_the_input_and_tensors_are_accepted() -> None:
    huge = "x" * 10_000
    with pytest.raises(DataError) as info:
        Highlight([huge, huge], [1.0], huge, 0.5)
    assert len(str(info.value)) < 120 and "xxxx" not in str(info.value)
    item = Highlight(("a", "b"), torch.tensor([0.25, 0.75], dtype=torch.float16), "pos", torch.tensor(0.5))
    assert item.tokens == ["a", "b"] and item.weights == [0.25, 0.75] and item.probability == 0.5
    assert isinstance(item.probability, float) and item.max_weight == 0.75


def test_plot_arguments_are_checked(tmp_path: Path) -> None:
    item = Highlight(["a"], [1.0], "pos", 1.0)
    with pytest.raises(ConfigError, match=r"\.png, \.svg or \.pdf"):
        plot_highlight(item, tmp_path / "x.jpg")
    with pytest.raises(ConfigError, match="max_tokens must be a positive integer"):
        plot_highlight(item, max_tokens=0)
    with pytest.raises(ConfigError, match="unknown colour map"):
        plot_highlight(item, cmap="no-such-map")
    with pytest.raises(ConfigError, match="no examples"):
        plot_highlight([])
    with pytest.raises(ConfigError, match="example 1 has type dict, not Highlight"):
        highlight_html([item, {"tokens": ["a"]}])
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------- figures


def test_png_is_written(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "one.png"
    plot_highlight(Highlight(["a", "fine", "film"], [0.1, 0.3, 0.6], "positive", 0.8), path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_strings_are_drawn_literally_not_as_mathtext(tmp_path: Path) -> None:
    path = tmp_path / "math.svg"
    # A broken mathtext label or title would raise when drawn if it were parsed as math.
    item = Highlight(["price", "$x^2$", "now"], [0.2, 0.7, 0.1], "$\\frac{$", 0.6, true_label="$y$",
                     title="$\\frac{$ title")
    fig = plot_highlight(item, path)
    assert _token_texts(fig) == ["price", "$x^2$", "now"]
    svg = path.read_text(encoding="utf-8")
    # Text is drawn as glyph outlines, each string preceded by a comment: "$x^2$" as five glyphs, both "$" the same
    # (mathtext would draw two: an italic x and a superscript 2).
    m = re.search(r"<!-- \$x\^2\$ -->\s*<g[^>]*>(.*?)</g>", svg, re.S)
    assert m is not None
    glyphs = re.findall(r'<use xlink:href="#([^"]+)"', m.group(1))
    assert len(glyphs) == 5 and glyphs[0] == glyphs[4] != glyphs[1]
    assert "<!-- predicted: $\\frac{$ (p = 0.600) \N{MIDDLE DOT} true: $y$ \N{BALLOT X} -->" in svg
    assert svg.count('id="token-0-') == 3


def test_chinese_tokens_render_without_missing_glyphs(tmp_path: Path) -> None:
    item = Highlight(ZH, [0.05, 0.05, 0.1, 0.1, 0.1, 0.3, 0.25, 0.05], "正面", 0.87, true_label="负面",
                     title="评论 3")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any "Glyph ... missing from font(s)" warning fails the test
        fig = plot_highlight(item, tmp_path / "zh.png")
        plot_highlight(item, tmp_path / "zh.svg")
    assert _token_texts(fig) == ZH  # drawn as given, not replaced by boxes
    assert "NotoSansCJK" in (tmp_path / "zh.svg").read_text(encoding="utf-8").replace(" ", "")


def test_cjk_characters_are_joined_without_spaces() -> None:
    tokens = ["我", "爱", "NLP", "and", "你", "。", "ok", ""]
    assert space_before(tokens) == [False, False, False, True, False, False, False, True]
    fig = plot_highlight(Highlight(tokens, [0.1] * len(tokens), "pos", 0.5))
    boxes = _boxes(fig)
    gaps = [round(b.get_x() - (a.get_x() + a.get_width()), 6) for a, b in zip(boxes, boxes[1:], strict=False)]
    assert [g > 0 for g in gaps] == space_before(tokens)[1:]  # a gap exactly where a space goes
    assert all(g >= 0 for g in gaps)


def test_background_intensity_follows_weights_per_example() -> None:
    weights = [0.05, 0.4, 0.1, 0.3, 0.15, 0.0]
    tokens = ["w0", "w1", "w2", "w3", "w4", "w5"]
    fig = plot_highlight([Highlight(tokens, weights, "a", 0.5),
                          Highlight(tokens, [4 * w for w in weights], "b", 0.5)])
    first, second = _boxes(fig, 0), _boxes(fig, 1)
    intensity = [_intensity(b.get_facecolor()) for b in first]
    assert sorted(range(6), key=intensity.__getitem__) == sorted(range(6), key=weights.__getitem__)
    assert len(set(intensity)) == 6  # distinct weights, distinct colours
    # Scaled per example: four times the weights (exact in binary) give the same colours.
    assert [b.get_facecolor() for b in second] == [b.get_facecolor() for b in first]
    assert first[1].get_facecolor() == pytest.approx(fig.axes[0].get_images()[0].cmap(1.0))


def test_long_text_wraps_and_says_what_was_left_out(tmp_path: Path) -> None:
    tokens = [f"word{i}" for i in range(500)]
    fig = plot_highlight(Highlight(tokens, torch.rand(500, generator=torch.Generator().manual_seed(0)), "pos", 0.5),
                         tmp_path / "long.png", max_tokens=120, width=6.0, dpi=40)
    boxes = _boxes(fig)
    assert len(boxes) == 120
    rows = sorted({round(b.get_y(), 6) for b in boxes})
    assert len(rows) > 5  # wrapped onto many lines
    assert max(b.get_x() + b.get_width() for b in boxes) <= 6.0
    assert any("380 more tokens not shown (max_tokens=120)" in t.get_text() for t in fig.axes[0].texts)
    width, height = fig.get_size_inches()
    assert width == 6.0 and height > len(rows) * 0.2


# ------------------------------------------------------------------------------------------- HTML page


def test_hostile_tokens_stay_data_and_page_is_offline() -> None:
    items = [Highlight(HOSTILE, [0.1 * (i + 1) for i in range(len(HOSTILE))], "<b>pos</b>", 0.9, text="a & b"),
             Highlight(["good", "film"], [0.2, 0.8], "neg", 0.6, true_label="neg", title="<u>2</u>")]
    page = highlight_html(items, title="<i>t</i>")
    raw = re.search(r'<script type="application/json" id="attnlab-highlight-data">(.*?)</script>', page, re.S)
    assert not set("<>&") & set(raw.group(1))  # the data block is inert: markup characters as \\u escapes
    assert "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in raw.group(1)
    # Without its two scripts (cut at the first "</script>", as a browser would), the page holds no token.
    markup = re.sub(r"<script[^>]*>.*?</script>", "", page, flags=re.S)
    for token in [*HOSTILE[:5], "<b>pos</b>", "<u>2</u>", "a & b"]:
        assert token not in markup
    assert page.count("<script") == 2 and page.count("</script>") == 2  # data block and script, nothing injected
    assert "<title>&lt;i&gt;t&lt;/i&gt;</title>" in page
    data = _data(page)
    assert data["examples"][0]["tokens"] == HOSTILE and data["examples"][0]["label"] == "<b>pos</b>"
    assert data["examples"][1]["title"] == "<u>2</u>" and data["title"] == "<i>t</i>"
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"//cdn|\bsrc=|\bhref=|@import|url\(", markup)  # no resource to load, data aside
    js = re.findall(r"<script>(.*?)</script>", page, re.S)[0]
    for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                   "setAttribute(\"style\""):
        assert banned not in js
    css = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    for source, kind in ((js, "script"), (css, "style")):
        assert f"{kind}-src 'sha256-{base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()}'" in csp
    assert "default-src 'none'" in csp


def test_every_example_is_in_the_page_data(tmp_path: Path) -> None:
    items = [Highlight(["我", "爱", "你"], [0.1234567, 0.5, 0.3765433], "正面", 0.75, text="我爱你"),
             Highlight(["so", "bad"], torch.tensor([0.3, 0.7]), "neg", 0.6, true_label="pos", title="review 2")]
    path = write_highlight_html(items, tmp_path / "sub" / "page.html", decimals=4)
    examples = _data(path.read_text(encoding="utf-8"))["examples"]
    assert len(examples) == 2
    assert examples[0] == {"tokens": ["我", "爱", "你"], "weights": [0.1235, 0.5, 0.3765], "spaceBefore": [False] * 3,
                           "label": "正面", "probability": 0.75, "trueLabel": None, "title": None, "text": "我爱你"}
    assert examples[1]["tokens"] == ["so", "bad"] and examples[1]["spaceBefore"] == [False, True]
    assert examples[1]["weights"] == pytest.approx([0.3, 0.7]) and examples[1]["trueLabel"] == "pos"


# ------------------------------------------------------------------------------------------- in a browser


@pytest.mark.browser
def test_page_in_headless_chromium(devtools, tmp_path: Path) -> None:
    weights = [0.05, 0.3, 0.1, 0.2, 0.02, 0.15, 0.08, 0.1]
    items = [Highlight(HOSTILE, weights, "<b>pos</b>", 0.9, true_label="pos"),
             Highlight(["good", "film", "!"], [0.2, 0.7, 0.1], "neg", 0.6, title="second")]
    page = write_highlight_html(items, tmp_path / "highlight.html", title="<script>x</script>")
    devtools.call("Page.addScriptToEvaluateOnNewDocument",
                  source="window.__alerts = []; window.alert = m => window.__alerts.push(String(m));")
    devtools.call("Page.navigate", url=page.as_uri())
    devtools.wait_for("document.documentElement.dataset.ready === '1'")
    spans = "Array.from(document.querySelectorAll('#tokens .tok'))"

    assert devtools.js(f"{spans}.map(e => e.textContent)") == HOSTILE
    assert devtools.js("document.scripts.length") == 2
    assert devtools.js("document.querySelectorAll('img, iframe, object, embed, [onerror]').length") == 0
    assert devtools.js("document.getElementById('title').textContent") == "<script>x</script>"
    assert devtools.js("document.getElementById('pred-label').textContent") == "<b>pos</b>"
    assert devtools.js(f"{spans}.map(e => Number(e.dataset.weight))") == weights
    assert "weight 0.3" in devtools.js(f"{spans}[1].title")  # the exact weight on hover
    # Darker background for a larger weight (luminance of the computed colour).
    lum = devtools.js(f"{spans}.map(e => e.ownerDocument.defaultView.getComputedStyle(e).backgroundColor"
                      ".match(/\\d+/g).map(Number)).map(c => 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2])")
    assert sorted(range(len(weights)), key=lambda i: -lum[i]) == sorted(range(len(weights)), key=weights.__getitem__)
    top = devtools.js("Array.from(document.querySelectorAll('#top tbody tr')).map(r => r.cells[1].textContent)")
    assert top == [HOSTILE[i] for i in (1, 3, 5, 2, 7)]  # ties broken by position

    devtools.click("#list li:nth-child(2) button")
    devtools.wait_for("document.getElementById('pred-label').textContent === 'neg'")
    assert devtools.js(f"{spans}.map(e => e.textContent)") == ["good", "film", "!"]
    assert devtools.js("document.getElementById('ex-title').textContent") == "second"
    assert devtools.js("document.querySelector('#list .item.selected').dataset.index") == "1"
    assert devtools.js("document.getElementById('true-wrap').hidden") is True

    for kind in ("keyDown", "keyUp"):
        devtools.call("Input.dispatchKeyEvent", type=kind, key="ArrowUp", code="ArrowUp", windowsVirtualKeyCode=38)
    devtools.wait_for("document.getElementById('pred-label').textContent === '<b>pos</b>'")
    assert devtools.js(f"{spans}.map(e => e.textContent)") == HOSTILE

    assert devtools.js("window.__alerts") == []
    assert devtools.errors() == []
    assert [u for u in devtools.requests() if not u.startswith(("file:", "data:"))] == []
