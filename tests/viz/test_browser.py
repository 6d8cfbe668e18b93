"""The viewer in a real headless Chromium (Debian's package), driven over the Chrome DevTools Protocol: every view,
hover, click and key, many examples, a 500-token page (its load and hover times are printed: run with -s), the
screenshots of docs/figures/viewer-*.png (rewritten with ATTNLAB_UPDATE_FIGURES=1) and the notebook's inline frames.

Skips only when no Chromium is installed and ATTNLAB_REQUIRE_BROWSER is unset; CI sets it, so there a missing
browser (or websocket-client) is a failure.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from attnlab.models.base import AttentionMaps
from attnlab.viz.html import write_html

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # pytest runs with --import-mode=importlib
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from browser_helpers import DevTools, launch_devtools  # noqa: E402

pytestmark = pytest.mark.browser

SRC = ["</script><script>alert(1)</script>", "<img src=x onerror=alert(1)>", "\"double\" 'single'", "我爱你",
       "😀🎉", "&amp;"]
TGT = ["I", "<b>love</b>", "you", "!"]


@pytest.fixture(scope="module")
def devtools(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevTools]:
    profile = tmp_path_factory.mktemp("chromium-profile")
    with launch_devtools(profile, profile.parent / "chromium.log") as tools:
        yield tools


def _maps() -> AttentionMaps:
    """Known weights: cross query j attends 0.7 to source j + 1 in head 0 and uniformly in head 1."""
    cross = torch.full((1, 1, 2, len(TGT), len(SRC)), 1.0 / len(SRC))
    for j in range(len(TGT)):
        cross[0, 0, 0, j] = 0.3 / (len(SRC) - 1)
        cross[0, 0, 0, j, j + 1] = 0.7
    enc = torch.softmax(torch.randn(2, 1, 2, len(SRC), len(SRC), generator=torch.Generator().manual_seed(0)), -1)
    dec = torch.tril(torch.ones(1, 1, 2, len(TGT), len(TGT)))
    return AttentionMaps(encoder_self=enc, decoder_self=dec / dec.sum(-1, keepdim=True), cross=cross)


def _weights(tools: DevTools, selector: str) -> list[float | None]:
    return tools.js(f"Array.from(document.querySelectorAll({json.dumps(selector)}))"
                    ".map(e => e.dataset.weight === undefined ? null : Number(e.dataset.weight))")


def _open(tools: DevTools, page: Path) -> float:
    """Navigate to ``page`` and wait for the viewer; returns the seconds from navigation to ready."""
    tools.call("Page.addScriptToEvaluateOnNewDocument",
               source="window.__alerts = []; window.alert = m => window.__alerts.push(String(m));")
    tools.js("document.documentElement.dataset.ready = '0'")  # the previous page's flag must not answer
    start = time.monotonic()
    tools.call("Page.navigate", url=page.as_uri())
    tools.wait_for(f"document.URL === {json.dumps(page.as_uri())} && document.documentElement.dataset.ready === '1'",
                   timeout=60)
    return time.monotonic() - start


def _state(tools: DevTools) -> dict[str, Any]:
    return tools.js("JSON.parse(JSON.stringify(window.attnlabViewer.state))")


def _lines(tools: DevTools) -> list[list[float]]:
    """The lines the head view drew last: ``[head, query, key, opacity]``."""
    return tools.js("window.attnlabViewer.lines")


def _choose(tools: DevTools, select: str, value: str) -> None:
    tools.js(f"(() => {{ const s = document.getElementById({json.dumps(select)}); s.value = {json.dumps(value)};"
             " s.dispatchEvent(new Event('change')); })()")


def _press(tools: DevTools, key: str) -> None:
    codes = {"ArrowUp": 38, "ArrowDown": 40, "ArrowLeft": 37, "ArrowRight": 39, "Escape": 27, "[": 219, "]": 221,
             ",": 188, ".": 190}
    text = key if len(key) == 1 else ""
    tools.call("Input.dispatchKeyEvent", type="keyDown" if text else "rawKeyDown", key=key, text=text,
               windowsVirtualKeyCode=codes[key])
    tools.call("Input.dispatchKeyEvent", type="keyUp", key=key, windowsVirtualKeyCode=codes[key])


def _into_view(tools: DevTools, selector: str) -> None:
    tools.js(f"document.querySelector({json.dumps(selector)}).scrollIntoView({{block: 'center'}})")


def _assert_clean(tools: DevTools) -> None:
    assert tools.js("window.__alerts") == []
    assert tools.errors() == []
    assert [u for u in tools.requests() if not u.startswith(("file:", "data:", "about:"))] == []


def test_head_view_isolates_the_lines_of_a_token(devtools: DevTools, tmp_path: Path) -> None:
    maps = _maps()
    page = write_html(maps, tmp_path / "viewer.html", query_tokens=TGT, key_tokens=SRC, title="<script>x</script>")
    _open(devtools, page)

    # Tokens are text; nothing was injected; the first view (encoder self-attention) is open in the head view.
    assert devtools.js("Array.from(document.querySelectorAll('#hv-q .hv-tok')).map(e => e.textContent)") == SRC
    assert devtools.js("Array.from(document.querySelectorAll('#hv-k .hv-tok')).map(e => e.textContent)") == SRC
    assert devtools.js("document.querySelectorAll('img, iframe, object, embed, b, [onerror]').length") == 0
    assert devtools.js("document.scripts.length") == 2
    assert devtools.js("document.title") == "<script>x</script>"
    assert devtools.js("document.getElementById('title').textContent") == "<script>x</script>"
    assert _state(devtools)["mode"] == "head"

    # Cross-attention, head 0: hovering target token 1 draws exactly its six lines, the one to source 2 opaque.
    _choose(devtools, "view", "2")
    _choose(devtools, "head", "0")
    assert devtools.js("Array.from(document.querySelectorAll('#hv-q .hv-tok')).map(e => e.textContent)") == TGT
    devtools.hover("#hv-q .hv-tok[data-index='1']")
    devtools.wait_for("window.attnlabViewer.state.hover && window.attnlabViewer.state.hover.index === 1")
    lines = _lines(devtools)
    assert sorted((h, i, j) for h, i, j, _ in lines) == [(0, 1, j) for j in range(len(SRC))]
    opacity = {j: a for _, _, j, a in lines}
    assert opacity[2] == pytest.approx(1.0) and opacity[0] == pytest.approx((0.3 / 5) / 0.7, abs=1e-3)
    row = maps.cross[0, 0, 0, 1].tolist()
    assert _weights(devtools, "#hv-k .hv-tok") == pytest.approx(row, abs=1e-3)
    assert devtools.js("document.querySelector('#hv-k .hv-tok.top').dataset.index") == "2"
    assert "attends most to" in devtools.js("document.getElementById('status').textContent")

    # All heads overlaid: both heads' lines of that token, in their own opacities.
    _choose(devtools, "head", "all")
    devtools.hover("#hv-q .hv-tok[data-index='2']")
    devtools.wait_for("window.attnlabViewer.state.hover.index === 2")
    lines = _lines(devtools)
    assert sorted((h, i, j) for h, i, j, _ in lines) == [(h, 2, j) for h in (0, 1) for j in range(len(SRC))]
    assert {round(a, 3) for h, _, _, a in lines if h == 1} == {round((1 / 6) / 0.7, 3)}
    # A head toggled off leaves the overlay.
    devtools.click("#head-toggles input[data-head='1']")
    assert _state(devtools)["shown"] == [True, False] and _state(devtools)["head"] == "all"
    devtools.hover("#hv-q .hv-tok[data-index='3']")
    devtools.wait_for("window.attnlabViewer.state.hover.index === 3")
    assert {h for h, *_ in _lines(devtools)} == {0}
    devtools.click("#head-toggles input[data-head='1']")

    # A key token: what attends to it, one line per query and head.
    devtools.hover("#hv-k .hv-tok[data-index='3']")
    devtools.wait_for("window.attnlabViewer.state.hover.side === 'k'")
    assert sorted((h, i, j) for h, i, j, _ in _lines(devtools)) == [(h, i, 3) for h in (0, 1) for i in range(len(TGT))]
    assert _weights(devtools, "#hv-q .hv-tok") == pytest.approx(maps.cross[0, 0, :, :, 3].mean(0).tolist(), abs=1e-3)

    # A click pins; moving away keeps it; Escape releases and every line comes back.
    devtools.click("#hv-q .hv-tok[data-index='0']")
    devtools.call("Input.dispatchMouseEvent", type="mouseMoved", x=5, y=5)
    assert _state(devtools)["pinned"] == {"side": "q", "index": 0} and _state(devtools)["hover"] is None
    assert {i for _, i, _, _ in _lines(devtools)} == {0}
    assert devtools.js("document.getElementById('status').textContent").endswith(" \u00b7 pinned")
    _press(devtools, "Escape")
    assert _state(devtools)["pinned"] is None and len(_lines(devtools)) == 2 * len(TGT) * len(SRC)

    # Decoder self-attention: the causal triangle, no line to a later position.
    _choose(devtools, "view", "1")
    lines = _lines(devtools)
    assert lines and all(j <= i for _, i, j, _ in lines) and len(lines) == 2 * len(TGT) * (len(TGT) + 1) // 2
    _assert_clean(devtools)


def _nice_page(path: Path, lang: str = "en") -> Path:
    """Two translations with the look of real attention (mostly monotonic, some spread), for the screenshots."""
    from attnlab.viz.views import Example

    pairs = [("the cat sat on the mat .", "die Katze saß auf der Matte ."),
             ("a dog sleeps .", "ein Hund schläft .")]
    gen, examples = torch.Generator().manual_seed(3), []
    for src, tgt in pairs:
        s, t = src.split(), tgt.split()
        pos = torch.arange(len(t))[:, None] * (len(s) - 1) / max(len(t) - 1, 1) - torch.arange(len(s))[None]
        cross = torch.softmax(-1.5 * pos.abs() + torch.randn(2, 4, len(t), len(s), generator=gen), -1)
        local = -(torch.arange(len(s))[:, None] - torch.arange(len(s))[None]).abs().float()
        enc = torch.softmax(local + 1.5 * torch.randn(2, 4, len(s), len(s), generator=gen), -1)
        causal = torch.ones(len(t), len(t), dtype=torch.bool).tril()
        dec = torch.softmax((1.5 * torch.randn(2, 4, len(t), len(t), generator=gen)).masked_fill(~causal, -1e9), -1)
        maps = AttentionMaps(encoder_self=enc[:, None], decoder_self=dec[:, None], cross=cross[:, None])
        examples.append(Example(maps, t, s, name=src, prediction=tgt))
    return write_html(examples, path, title="attnlab: two translations", lang=lang)


def test_every_view_renders_and_hostile_tokens_stay_text(devtools: DevTools, tmp_path: Path) -> None:
    page = write_html(_maps(), tmp_path / "hostile.html", query_tokens=TGT, key_tokens=SRC)
    _open(devtools, page)
    for view, (queries, keys) in enumerate([(SRC, SRC), (TGT, TGT), (TGT, SRC)]):
        _choose(devtools, "view", str(view))
        for mode in ("head", "model", "matrix", "text"):
            devtools.click(f"#tab-{mode}")
            assert _state(devtools)["mode"] == mode
            assert devtools.js(f"document.getElementById('pane-{mode}').hidden") is False
            assert devtools.js("document.querySelectorAll('.pane:not([hidden])').length") == 1
            assert devtools.js("document.querySelectorAll('img, iframe, object, embed, b, [onerror]').length") == 0
            assert devtools.js("document.scripts.length") == 2
        def texts(selector: str) -> list[str]:
            return devtools.js(f"Array.from(document.querySelectorAll('{selector}')).map(e => e.textContent)")

        assert texts("#queries .tok") == queries and texts("#keys .tok") == keys
        devtools.click("#tab-head")
        assert texts("#hv-q .hv-tok") == queries and texts("#hv-k .hv-tok") == keys
    # The matrix and the model view draw on canvases of real size; the summaries follow the kind of attention.
    devtools.click("#tab-matrix")
    assert devtools.js("document.getElementById('mx-base').width") > 100
    assert devtools.js("document.getElementById('rollout-box').hidden") is True
    assert devtools.js("document.querySelectorAll('#align-list li').length") == len(TGT)  # cross: the alignment
    _choose(devtools, "view", "0")
    assert devtools.js("document.getElementById('rollout-box').hidden") is False
    assert devtools.js("document.querySelectorAll('#rollout-top li').length") == 5
    assert devtools.js("document.querySelectorAll('#entropy-body tr').length") == 2 * 2  # layers x heads
    # Every control has a name a screen reader can read.
    unnamed = devtools.js("Array.from(document.querySelectorAll('button, select, input, canvas[role]')).filter(e =>"
                          " !(e.textContent.trim() || e.getAttribute('aria-label') || e.closest('label'))).length")
    assert unnamed == 0
    _assert_clean(devtools)


def test_model_view_thumbnail_opens_that_head(devtools: DevTools, tmp_path: Path) -> None:
    maps = _maps()
    page = write_html(maps, tmp_path / "model.html", query_tokens=TGT, key_tokens=SRC)
    _open(devtools, page)
    devtools.click("#tab-model")
    assert devtools.js("document.querySelectorAll('#model-grid .thumb').length") == 2 * 2  # encoder: 2 layers x 2
    labels = devtools.js("Array.from(document.querySelectorAll('.thumb')).map(e => e.getAttribute('aria-label'))")
    assert labels[3].startswith("layer 1, head 1: entropy ")
    # One colour scale for every thumbnail: from 0 to the largest weight of any layer and head.
    top = float(maps.encoder_self.max())
    assert devtools.js("document.getElementById('model-bar').getAttribute('aria-label')") == \
        f"colour scale from 0.000 to {top:.3f}"
    devtools.click(".thumb[data-layer='1'][data-head='1']")
    state = _state(devtools)
    assert (state["layer"], state["head"], state["mode"]) == (1, 1, "head")
    assert devtools.js("[document.getElementById('layer').value, document.getElementById('head').value]") == ["1", "1"]
    assert devtools.js("document.getElementById('tab-head').getAttribute('aria-selected')") == "true"
    assert {h for h, *_ in _lines(devtools)} == {1}
    devtools.click("#tab-matrix")
    assert devtools.js("document.getElementById('matrix-title').textContent") == "matrix \u00b7 layer 1 \u00b7 head 1"
    # Arrow keys move the selected thumbnail in the model view.
    devtools.click("#tab-model")
    _press(devtools, "ArrowUp")
    _press(devtools, "ArrowLeft")
    assert (_state(devtools)["layer"], _state(devtools)["head"]) == (0, 0)
    assert devtools.js("document.querySelector('.thumb.selected').dataset.layer") == "0"
    _assert_clean(devtools)


def test_summaries_sort_select_and_follow_the_token(devtools: DevTools, tmp_path: Path) -> None:
    from attnlab.viz.analysis import attention_entropy, attention_rollout

    maps = _maps()
    _open(devtools, write_html(maps, tmp_path / "summaries.html", query_tokens=TGT, key_tokens=SRC))
    rows = "Array.from(document.querySelectorAll('#entropy-body tr')).map(r => r.children[2].textContent)"
    entropy = attention_entropy(maps.encoder_self[:, 0])  # (L, H)
    devtools.click("#entropy th[data-sort='entropy'] button")
    assert devtools.js(rows) == [f"{e:.2f}" for e in sorted(entropy.flatten().tolist())]
    assert devtools.js("document.querySelector(\"#entropy th[data-sort='entropy']\").getAttribute('aria-sort')") \
        == "ascending"
    devtools.click("#entropy th[data-sort='entropy'] button")
    assert devtools.js(rows) == [f"{e:.2f}" for e in sorted(entropy.flatten().tolist(), reverse=True)]
    devtools.click("#entropy-body tr:last-child button")  # the head of lowest entropy
    low = int(entropy.flatten().argmin())
    assert (_state(devtools)["layer"], _state(devtools)["head"]) == (low // 2, low % 2)
    # Rollout of the encoder: the top source tokens of the selected query, as attention_rollout ranks them.
    devtools.click("#hv-q .hv-tok[data-index='4']")
    rollout = attention_rollout(maps.encoder_self[:, 0])[4]
    top = [SRC[j] for j in rollout.argsort(descending=True)[:5].tolist()]
    assert devtools.js("Array.from(document.querySelectorAll('#rollout-top .tokname')).map(e => e.textContent)") == top
    assert devtools.js("document.getElementById('rollout-for').textContent") == f"\u201c{SRC[4]}\u201d draws most from:"
    # Cross-attention: the alignment list; a click on a link selects its target token.
    _choose(devtools, "view", "2")
    links = devtools.js("Array.from(document.querySelectorAll('#align-list button')).map(b => b.textContent)")
    assert links == [f"{TGT[j]} \u2190 {SRC[j + 1]}" for j in range(len(TGT))]  # head 0 looks at j + 1
    devtools.click("#align-list li:nth-child(3) button")
    assert _state(devtools)["pinned"] == {"side": "q", "index": 2}
    _assert_clean(devtools)


@pytest.mark.parametrize("precision", ["float16", "uint8"])
def test_matrix_hover_and_the_decoded_weights(devtools: DevTools, tmp_path: Path, precision: str) -> None:
    from attnlab.viz.html import decode_weights, html_document

    maps = _maps()
    page = write_html(maps, tmp_path / f"{precision}.html", query_tokens=TGT, key_tokens=SRC, precision=precision)
    _open(devtools, page)
    # The script decodes exactly what Python decodes.
    text = html_document(maps, query_tokens=TGT, key_tokens=SRC, precision=precision)
    data = json.loads(text.split('id="attnlab-data">', 1)[1].split("</script>", 1)[0])
    for i, v in enumerate(data["views"]):
        assert v["weights"]["dtype"] == precision
        assert devtools.js(f"window.attnlabViewer.decoded({i})") == decode_weights(v["weights"]).flatten().tolist()

    _choose(devtools, "view", "2")
    _choose(devtools, "head", "0")
    devtools.click("#tab-matrix")
    geometry = devtools.js("(() => { const r = document.getElementById('mx-base').getBoundingClientRect(),"
                           " m = window.attnlabViewer.matrix; return [r.x, r.y, m.left, m.top, m.cell]; })()")
    x0, y0, left, top, cell = geometry
    devtools.call("Input.dispatchMouseEvent", type="mouseMoved", x=x0 + left + 2.5 * cell, y=y0 + top + 1.5 * cell)
    devtools.wait_for("window.attnlabViewer.state.hover && window.attnlabViewer.state.hover.key === 2")
    assert _state(devtools)["hover"] == {"side": "q", "index": 1, "key": 2}
    status = devtools.js("document.getElementById('status').textContent")
    assert status == f"\u201c{TGT[1]}\u201d \u2192 \u201c{SRC[2]}\u201d: 0.700"
    assert cell >= 28  # large cells: each shows its value
    # Keyboard: the arrows move the pinned cell (on a focused tab they would move to the next tab).
    devtools.call("Input.dispatchMouseEvent", type="mouseMoved", x=5, y=5)
    devtools.js("document.activeElement.blur()")
    _press(devtools, "ArrowDown")
    _press(devtools, "ArrowDown")
    _press(devtools, "ArrowRight")
    assert _state(devtools)["pinned"] == {"side": "q", "index": 1, "key": 1}
    _assert_clean(devtools)


def test_switching_examples_keeps_view_layer_and_head(devtools: DevTools, tmp_path: Path) -> None:
    from attnlab.viz.views import Example

    gen = torch.Generator().manual_seed(5)
    examples = []
    for n, layers in ((3, 2), (5, 2), (4, 1)):
        src, tgt = [f"s{n}{i}" for i in range(n)], [f"t{n}{i}" for i in range(n + 1)]
        maps = AttentionMaps(encoder_self=torch.softmax(torch.randn(layers, 1, 3, n, n, generator=gen), -1),
                             cross=torch.softmax(torch.randn(layers, 1, 3, n + 1, n, generator=gen), -1))
        examples.append(Example(maps, tgt, src, name=" ".join(src), prediction=" ".join(tgt)))
    _open(devtools, write_html(examples, tmp_path / "three.html"))
    assert devtools.js("document.querySelectorAll('#examples button').length") == 3
    devtools.click("#tab-matrix")
    _choose(devtools, "view", "1")  # cross-attention of the first example
    devtools.js("document.activeElement.blur()")
    _press(devtools, "]")  # layer 1
    for _ in range(3):
        _press(devtools, ".")  # all heads -> head 0 -> head 1 -> head 2
    assert (_state(devtools)["layer"], _state(devtools)["head"]) == (1, 2)
    devtools.click("#examples li:nth-child(2) button")
    state = _state(devtools)
    assert (state["example"], state["mode"], state["layer"], state["head"]) == (1, "matrix", 1, 2)
    assert devtools.js("window.attnlabViewer.state.view") == 3  # the second example's cross-attention
    assert devtools.js("document.getElementById('matrix-title').textContent") == "matrix \u00b7 layer 1 \u00b7 head 2"
    line = devtools.js("document.getElementById('example-line').textContent")
    assert line == "example 2 of 3 \u00b7 s50 s51 s52 s53 s54 \u00b7 prediction: t50 t51 t52 t53 t54 t55"
    assert devtools.js("document.querySelector('#examples button[aria-current]').dataset.example") == "1"
    # An example with fewer layers: the layer is clamped, the rest kept; arrow keys in the list move through it.
    devtools.click("#examples li:nth-child(3) button")
    state = _state(devtools)
    assert (state["example"], state["mode"], state["layer"], state["head"]) == (2, "matrix", 0, 2)
    _press(devtools, "ArrowUp")
    assert _state(devtools)["example"] == 1
    _assert_clean(devtools)


def test_keyboard_moves_the_token_layer_and_head(devtools: DevTools, tmp_path: Path) -> None:
    _open(devtools, write_html(_maps(), tmp_path / "keys.html", query_tokens=TGT, key_tokens=SRC))
    devtools.js("document.activeElement.blur()")
    _press(devtools, "ArrowDown")
    assert _state(devtools)["pinned"] == {"side": "q", "index": 0}
    _press(devtools, "ArrowDown")
    _press(devtools, "ArrowRight")
    assert _state(devtools)["pinned"] == {"side": "k", "index": 1}
    assert devtools.js("document.activeElement.dataset.side + document.activeElement.dataset.index") == "k1"
    assert {j for _, _, j, _ in _lines(devtools)} == {1}
    _press(devtools, "ArrowUp")
    assert _state(devtools)["pinned"] == {"side": "k", "index": 0}
    _press(devtools, "Escape")
    assert _state(devtools)["pinned"] is None
    _press(devtools, "]")
    _press(devtools, "]")  # stays on the last layer
    assert _state(devtools)["layer"] == 1 and devtools.js("document.getElementById('layer').value") == "1"
    _press(devtools, "[")
    assert _state(devtools)["layer"] == 0
    heads = []
    for _ in range(3):
        _press(devtools, ".")
        heads.append(_state(devtools)["head"])
    _press(devtools, ",")
    assert heads == [0, 1, "all"] and _state(devtools)["head"] == 1
    _assert_clean(devtools)


def _timed_hover(tools: DevTools, selector: str) -> float:
    """Seconds from a real mouse move onto ``selector`` to the next painted frame after the page took it."""
    _into_view(tools, selector)
    box = tools.js(f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                   " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
    start = time.monotonic()
    tools.call("Input.dispatchMouseEvent", type="mouseMoved", x=box[0], y=box[1])
    tools.call("Runtime.evaluate", expression="new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))",
               awaitPromise=True)
    return time.monotonic() - start


def test_500_tokens_load_and_answer_a_hover(devtools: DevTools, tmp_path: Path) -> None:
    tokens = [f"w{i}" for i in range(500)]
    weights = torch.softmax(2 * torch.randn(2, 8, 500, 500, generator=torch.Generator().manual_seed(0)), -1)
    page = write_html(weights, tmp_path / "long.html", query_tokens=tokens)
    load = _open(devtools, page)
    hover = _timed_hover(devtools, "#hv-q .hv-tok[data-index='250']")
    assert _state(devtools)["hover"] == {"side": "q", "index": 250}
    lines = _lines(devtools)
    assert {i for _, i, _, _ in lines} == {250} and len(lines) <= 8 * 500
    timings = devtools.js("window.attnlabViewer.timings")
    modes = {}
    for mode in ("model", "matrix", "text", "head"):
        start = time.monotonic()
        devtools.click(f"#tab-{mode}")
        devtools.call("Runtime.evaluate", awaitPromise=True,
                      expression="new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        modes[mode] = round(time.monotonic() - start, 3)
    size = page.stat().st_size
    print(f"\n500 tokens, 2 layers x 8 heads: {size / 1e6:.1f} MB, load {load:.2f} s (script ready at "
          f"{timings['ready']:.0f} ms), hover {hover * 1000:.0f} ms (highlight {timings['highlight']:.0f} ms), "
          f"views {modes} s")
    assert size < 8e6  # 8 bits a weight: 4 M weights in about 5.4 MB of base64
    assert load < 30 and hover < 3 and max(modes.values()) < 5  # generous: the machine is shared
    _assert_clean(devtools)


def test_50_examples_of_30_tokens(devtools: DevTools, tmp_path: Path) -> None:
    from attnlab.viz.views import Example

    gen, n = torch.Generator().manual_seed(1), 30
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    examples = []
    for e in range(50):
        tokens = [f"e{e}w{i}" for i in range(n)]
        maps = AttentionMaps(
            encoder_self=torch.softmax(3 * torch.randn(2, 1, 8, n, n, generator=gen), -1),
            decoder_self=torch.softmax((3 * torch.randn(2, 1, 8, n, n, generator=gen)).masked_fill(~causal, -1e9), -1),
            cross=torch.softmax(3 * torch.randn(2, 1, 8, n, n, generator=gen), -1))
        examples.append(Example(maps, tokens, tokens, name=f"sentence {e}", prediction=f"prediction {e}"))
    page = write_html(examples, tmp_path / "fifty.html")
    load = _open(devtools, page)
    devtools.click("#tab-model")
    start = time.monotonic()
    devtools.js("document.querySelectorAll('#examples button')[42].click()")
    devtools.call("Runtime.evaluate", awaitPromise=True,
                  expression="new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    switch = time.monotonic() - start
    assert _state(devtools)["example"] == 42 and _state(devtools)["mode"] == "model"
    assert devtools.js("document.querySelectorAll('#model-grid .thumb').length") == 16
    size = page.stat().st_size
    print(f"\n50 examples x 30 tokens (3 kinds, 2 layers x 8 heads): {size / 1e6:.1f} MB, load {load:.2f} s, "
          f"switching example {switch * 1000:.0f} ms")
    assert size < 5e6 and load < 30 and switch < 3
    _assert_clean(devtools)


def test_screenshots_of_each_view(devtools: DevTools, tmp_path: Path) -> None:
    """Each view as a small PNG; with ATTNLAB_UPDATE_FIGURES=1 they replace docs/figures/viewer-*.png."""
    _open(devtools, _nice_page(tmp_path / "nice.html"))
    _choose(devtools, "view", "2")  # cross-attention
    keep = os.environ.get("ATTNLAB_UPDATE_FIGURES") == "1"
    figures = Path(__file__).resolve().parents[2] / "docs" / "figures"
    for mode, keys in (("head", []), ("model", []), ("matrix", ["ArrowDown", "ArrowDown", "ArrowRight"]),
                       ("text", [])):
        devtools.click(f"#tab-{mode}")
        devtools.js("document.activeElement.blur()")
        for key in keys:  # the matrix with the cell "Katze" -> "cat" pinned
            _press(devtools, key)
        devtools.call("Runtime.evaluate", awaitPromise=True,
                      expression="new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        shot = devtools.call("Page.captureScreenshot", format="png",
                             clip={"x": 0, "y": 0, "width": 1200, "height": 640, "scale": 0.75})["data"]
        png = tmp_path / f"viewer-{mode}.png"
        png.write_bytes(base64.b64decode(shot))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and 5_000 < png.stat().st_size < 300_000
        if keep:
            shutil.copy(png, figures / png.name)
        if os.environ.get("ATTNLAB_SCREENSHOT_DIR"):  # keep a copy to look at
            shutil.copy(png, Path(os.environ["ATTNLAB_SCREENSHOT_DIR"]) / png.name)
    _assert_clean(devtools)


# ------------------------------------------------------------------------------------- inline in a notebook


def _session_call(tools: DevTools, session: str | None, method: str, **params: Any) -> dict[str, Any]:
    """``tools.call`` addressed to an attached target's session (flat protocol) when ``session`` is given."""
    return tools.call(method, session=session, **params)


class _Frame:
    """Evaluates JavaScript in one iframe: an isolated world of the page's own session when the frame shares the
    page's process, else the session Chromium attached for it (sandboxed iframes may get a process of their own)."""

    def __init__(self, tools: DevTools, session: str | None, context: int | None) -> None:
        self.tools, self.session, self.context = tools, session, context

    def js(self, expression: str) -> Any:
        params: dict[str, Any] = {"expression": expression, "returnByValue": True}
        if self.context is not None:
            params["contextId"] = self.context
        result = _session_call(self.tools, self.session, "Runtime.evaluate", **params)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JS error in test expression: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        guarded = f"(() => {{ try {{ return !!({expression}); }} catch (e) {{ return false; }} }})()"
        while not self.js(guarded):
            if time.monotonic() > end:
                raise TimeoutError(f"timed out waiting for {expression} in a frame")
            time.sleep(0.05)


def _frames_by_title(tools: DevTools) -> dict[str, _Frame]:
    """Every child frame of the page that runs a script, keyed by its document's title."""
    candidates = []
    for child in tools.call("Page.getFrameTree")["frameTree"].get("childFrames", []):
        try:
            world = tools.call("Page.createIsolatedWorld", frameId=child["frame"]["id"], worldName="attnlab-test")
        except RuntimeError:  # not in this process: reached through its own session below
            continue
        candidates.append(_Frame(tools, None, world["executionContextId"]))
    for event in list(tools.events):
        if event.get("method") == "Target.attachedToTarget" and event["params"]["targetInfo"]["type"] == "iframe":
            candidates.append(_Frame(tools, event["params"]["sessionId"], None))
    frames = {}
    for frame in candidates:
        try:
            if frame.session is not None:  # report the frame's errors too (Runtime replays earlier ones)
                for domain in ("Runtime", "Log"):
                    _session_call(tools, frame.session, f"{domain}.enable")
            frame.wait_for("document.readyState === 'complete'")
            frames[frame.js("document.title")] = frame
        except (RuntimeError, TimeoutError):  # a context that went away: the frame is found the other way
            continue
    return frames


def _click_in_frame(tools: DevTools, index: int, frame: _Frame, selector: str, done: str) -> None:
    """A real click (moved, pressed, released) on ``selector`` inside the ``index``-th iframe of the page, until
    the frame's JavaScript ``done`` holds: on a loaded machine the frame's layout can still move (scrolling, fonts)
    between reading the token's position and the click landing, so a click that hit nothing is made again (three
    tries; a viewer that never reacts still fails). ``done`` must test what the click does (a pin), not what the
    pointer moving over a token already does (hover), and a click is never repeated once ``done`` holds: a second
    click on a pinned token unpins it."""
    for attempt in range(3):
        if attempt and frame.js(f"Boolean({done})"):  # the previous click took effect late
            return
        _click_once(tools, index, frame, selector)
        try:
            frame.wait_for(done, timeout=5.0 if attempt < 2 else 20.0)
            return
        except TimeoutError:
            if attempt == 2:
                raise


def _click_once(tools: DevTools, index: int, frame: _Frame, selector: str) -> None:
    tools.js(f"document.querySelectorAll('iframe')[{index}].scrollIntoView({{block: 'start'}})")
    origin = tools.js(f"(() => {{ const f = document.querySelectorAll('iframe')[{index}],"
                      " r = f.getBoundingClientRect(); return [r.x + f.clientLeft, r.y + f.clientTop]; })()")
    inner = frame.js(f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                     " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
    x, y = origin[0] + inner[0], origin[1] + inner[1]
    tools.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
    for kind in ("mousePressed", "mouseReleased"):
        tools.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)


def test_two_inline_bundles_in_one_page_work_independently(devtools: DevTools, tmp_path: Path) -> None:
    from attnlab.viz.notebook import inline

    maps = _maps()
    zh = ["甲", "乙", "丙", "丁"]
    known = torch.full((2, 4, 4), 0.1)  # (H, Tq, Tk): query i attends most to key (i + 1) % 4 in both heads
    for i in range(4):
        known[:, i, (i + 1) % 4] = 0.7
    first = inline(maps, query_tokens=TGT, key_tokens=SRC, title="first", height=700)
    second = inline(known, query_tokens=zh, title="second", lang="zh", height=700)
    # A notebook's output area: the two bundles' text/html one after the other in one document.
    bundles = [view._repr_mimebundle_()["text/html"] for view in (first, second)]
    page = tmp_path / "notebook.html"
    page.write_text("<!DOCTYPE html><html><head><meta charset='utf-8'><title>notebook</title></head><body>"
                    + "".join(f"<div class='output'>{b}</div>" for b in bundles) + "</body></html>", encoding="utf-8")
    _session_call(devtools, None, "Target.setAutoAttach", autoAttach=True, waitForDebuggerOnStart=False,
                  flatten=True)
    try:
        devtools.call("Page.addScriptToEvaluateOnNewDocument",
                      source="window.__alerts = []; window.alert = m => window.__alerts.push(String(m));")
        devtools.call("Page.navigate", url=page.as_uri())
        devtools.wait_for("document.readyState === 'complete' && document.querySelectorAll('iframe').length === 2")
        end = time.monotonic() + 20
        frames = _frames_by_title(devtools)
        while set(frames) != {"first", "second"} and time.monotonic() < end:  # attached sessions may come late
            time.sleep(0.2)
            frames = _frames_by_title(devtools)
        assert set(frames) == {"first", "second"}
        for frame in frames.values():
            frame.wait_for("document.documentElement.dataset.ready === '1'")
        one, two = frames["first"], frames["second"]

        # The notebook side: two wrappers with their own ids, the fallback pictures hidden where styles apply.
        ids = devtools.js("Array.from(document.querySelectorAll('.attnlab-inline')).map(e => e.id)")
        assert len(ids) == 2 and len(set(ids)) == 2
        assert devtools.js("Array.from(document.querySelectorAll('.attnlab-fallback'))"
                           ".map(e => getComputedStyle(e).display)") == ["none", "none"]
        assert devtools.js("document.querySelectorAll('body > .output > .attnlab-inline > iframe').length") == 2
        assert one.js("document.documentElement.lang") == "en" and two.js("document.documentElement.lang") == "zh-CN"
        assert one.js("Array.from(document.querySelectorAll('#hv-q .hv-tok')).map(e => e.textContent)") == SRC
        assert two.js("document.getElementById('status').textContent") == "注意力：悬停或点击一个词元。"
        assert two.js("document.getElementById('tab-model').textContent") == "模型视图"

        # Pin a token in the first viewer's head view: only the first reacts.
        _click_in_frame(devtools, 0, one, "#hv-q .hv-tok[data-index='1']",
                        "JSON.stringify(window.attnlabViewer.state.pinned) === '{\"side\":\"q\",\"index\":1}'")
        assert one.js("JSON.stringify(window.attnlabViewer.state.pinned)") == '{"side":"q","index":1}'
        expected = maps.encoder_self[0, 0].mean(0)[1].tolist()  # layer 0, all heads (their mean), query 1
        weights = one.js("Array.from(document.querySelectorAll('#hv-k .hv-tok')).map(e => Number(e.dataset.weight))")
        assert weights == pytest.approx(expected, abs=1e-3)
        assert one.js("window.attnlabViewer.lines.every(l => l[1] === 1)") is True
        assert two.js("document.querySelectorAll('.selected, [data-weight]').length") == 0

        # Then one in the second: it reacts in Chinese, and the first keeps its own pinned selection.
        _click_in_frame(devtools, 1, two, "#hv-q .hv-tok[data-index='2']",
                        "JSON.stringify(window.attnlabViewer.state.pinned) === '{\"side\":\"q\",\"index\":2}'")
        assert two.js("document.querySelector('#hv-q .hv-tok.selected').dataset.index") == "2"
        assert two.js("document.querySelector('#hv-k .hv-tok.top').dataset.index") == "3"
        status = two.js("document.getElementById('status').textContent")
        assert status.startswith("查询\u201c丙\u201d最关注\u201c丁\u201d")
        assert one.js("document.querySelector('#hv-q .hv-tok.selected').dataset.index") == "1"
        status = one.js("document.getElementById('status').textContent")
        assert status.startswith(f"query \u201c{SRC[1]}\u201d attends most to") and status.endswith(" \u00b7 pinned")
        assert one.js("document.querySelectorAll('img, iframe, [onerror]').length") == 0  # tokens stayed text

        assert devtools.js("window.__alerts") == []
        assert devtools.errors() == []
        assert [u for u in devtools.requests() if not u.startswith(("file:", "data:", "about:"))] == []
    finally:
        _session_call(devtools, None, "Target.setAutoAttach", autoAttach=False, waitForDebuggerOnStart=False)
