"""Attention over image patches: pixel alignment, ViT maps and rollout, the figures, the pages (offline, escaped,
and driven in a headless Chromium)."""

from __future__ import annotations

import html
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle

from attnlab.core.errors import ConfigError, DataError
from attnlab.viz.analysis import attention_rollout
from attnlab.viz.heatmap import save_figure
from attnlab.viz.image import (
    caption_attention_html,
    patch_map_to_pixels,
    plot_caption_attention,
    plot_vit_attention,
    save_html,
    to_display,
    vit_attention_html,
    vit_attention_maps,
)

HOSTILE = "</script><script>alert(1)</script>"
IMG_TAG = "<img src=x onerror=alert(1)>"
BROKEN_MATH = "$\\frac{$ <b>"  # raises if matplotlib parses it as mathtext
GRID, P = (3, 4), 8  # 3 x 4 patches of 8 x 8 pixels: a 24 x 32 image
N = GRID[0] * GRID[1]


def _load_browser_helpers():
    """tests/viz/test_browser.py as a module of helpers (its headless Chromium fixture), under a private name."""
    path = Path(__file__).with_name("test_browser.py")
    spec = importlib.util.spec_from_file_location("_attnlab_browser_helpers_image", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_BROWSER = _load_browser_helpers()
devtools = _BROWSER.devtools  # the same DevTools-protocol fixture as the viewer's browser test


def _image(channels: int = 3) -> torch.Tensor:
    return torch.rand(channels, GRID[0] * P, GRID[1] * P, generator=torch.Generator().manual_seed(0))


def _hand_built(L: int = 2, H: int = 2) -> torch.Tensor:
    """Patch rows are the identity; the class token's row is a distinct distribution per layer and head."""
    T = N + 1
    w = torch.eye(T).repeat(L, H, 1, 1)  # (L, H, T, T)
    for i in range(L):
        for j in range(H):
            row = torch.arange(1, T + 1, dtype=torch.float32) ** (1 + i + 2 * j)
            w[i, j, 0] = row / row.sum()
    return w


def _known() -> torch.Tensor:
    """One layer, two heads, one strong key per row in head 0: cls -> patch 5, patch q -> patch (q + 1) % N.

    Head 1 is uniform, so the mean over heads has the same largest entries as head 0.
    """
    T = N + 1
    head0 = torch.full((T, T), 0.4 / (T - 1))
    head0[0, 6] = 0.6
    for q in range(N):
        head0[q + 1] = 0.4 / (T - 1)
        head0[q + 1, (q + 1) % N + 1] = 0.6
    return torch.stack([head0, torch.full((T, T), 1.0 / T)])[None]  # (1, 2, T, T)


def _images_by_gid(fig) -> dict[str, AxesImage]:
    return {im.get_gid(): im for ax in fig.axes for im in ax.images if im.get_gid()}


def _data(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="attnlab-image-data">(.*?)</script>', page, re.S)
    assert m is not None
    return json.loads(m.group(1))


# ------------------------------------------------------------------------------------------- arrays


def test_to_display_follows_the_image_conventions() -> None:
    rgb = torch.randint(0, 256, (3, 4, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    shown = to_display(rgb)
    assert shown.shape == (4, 6, 3) and shown.dtype == np.float64
    np.testing.assert_array_equal(shown, rgb.permute(1, 2, 0).numpy() / 255.0)
    gray = np.linspace(0.0, 1.0, 24).reshape(1, 4, 6)
    np.testing.assert_array_equal(to_display(gray), gray[0])
    np.testing.assert_array_equal(to_display(gray[0]), gray[0])
    with pytest.raises(DataError, match=r"must be in \[0, 1\], got \[-2.1, 1\].*undo the input normalisation"):
        to_display(np.array([[-2.1, 1.0]]))
    with pytest.raises(DataError, match="channels last"):
        to_display(np.zeros((4, 6, 3)))
    with pytest.raises(DataError, match="0..255"):
        to_display(np.array([[0, 300]]))


@pytest.mark.parametrize(("r", "c"), [(0, 0), (1, 2), (2, 3)])
def test_one_hot_patch_lands_exactly_on_its_pixels(r: int, c: int) -> None:
    one_hot = np.zeros(N)
    one_hot[r * GRID[1] + c] = 1.0  # row-major: patch k is at (k // gw, k % gw)
    pixels = patch_map_to_pixels(one_hot, P, grid=GRID)
    assert pixels.shape == (GRID[0] * P, GRID[1] * P)
    assert (pixels[r * P:(r + 1) * P, c * P:(c + 1) * P] == 1.0).all()
    assert pixels.sum() == P * P  # and nowhere else
    np.testing.assert_array_equal(patch_map_to_pixels(one_hot.reshape(GRID), P), pixels)


def test_ramp_keeps_every_value_on_its_patch() -> None:
    ramp = torch.arange(N, dtype=torch.float32).reshape(GRID) / N
    pixels = patch_map_to_pixels(ramp, P)
    ys, xs = np.indices(pixels.shape)
    np.testing.assert_array_equal(pixels, ramp.double().numpy()[ys // P, xs // P])
    square = patch_map_to_pixels(np.arange(9.0), 2)  # a flat square map needs no grid
    assert square[5, 0] == 6.0 and square[1, 5] == 2.0


def test_a_map_of_the_wrong_size_is_a_clear_value_error() -> None:
    with pytest.raises(ValueError, match=r"of shape \(11,\) does not fit the 3 x 4 patch grid: expected N = 12"):
        patch_map_to_pixels(np.ones(11), P, grid=GRID)
    with pytest.raises(ValueError, match=r"12 weights is not a square grid: pass grid="):
        patch_map_to_pixels(np.ones(12), P)
    with pytest.raises(ValueError, match=r"shape \(4, 3\) does not fit the 3 x 4"):
        patch_map_to_pixels(np.ones((4, 3)), P, grid=GRID)
    with pytest.raises(ValueError, match="patch_size must be a positive integer"):
        patch_map_to_pixels(np.ones(4), 0)


# ------------------------------------------------------------------------------------------- ViT maps


def test_class_token_maps_are_the_rows_and_rollout_matches() -> None:
    w = _hand_built()
    cls, rollout = vit_attention_maps(w, grid=GRID)
    assert cls.shape == (2, 2, *GRID) and rollout.shape == GRID
    for i in range(2):
        for j in range(2):
            np.testing.assert_array_equal(cls[i, j], w[i, j, 0, 1:].double().numpy().reshape(GRID))
    expected = attention_rollout(w)[0, 1:].double()
    np.testing.assert_allclose(rollout.reshape(-1), (expected / expected.sum()).numpy(), rtol=1e-6)
    assert rollout.sum() == pytest.approx(1.0, abs=1e-12)
    # An independent oracle: with identity patch rows, A' = (I + mean_h A) / 2 row 0 can be chained by hand.
    a = [0.5 * np.eye(N + 1) + 0.5 * w[i].double().mean(0).numpy() for i in range(2)]
    by_hand = (a[1] @ a[0])[0, 1:]
    np.testing.assert_allclose(rollout.reshape(-1), by_hand / by_hand.sum(), rtol=1e-6)
    batched, rollout5 = vit_attention_maps(w[:, None], grid=GRID)  # (L, 1, H, T, T) as the ViT returns it
    np.testing.assert_array_equal(batched, cls)
    np.testing.assert_allclose(rollout5, rollout, rtol=1e-12)


def test_vit_maps_reject_mismatched_attention() -> None:
    with pytest.raises(DataError, match=r"attention over 13 tokens does not fit the 2 x 5 .* expected 11 "):
        vit_attention_maps(torch.ones(1, 1, 13, 13), grid=(2, 5))
    with pytest.raises(DataError, match="batch of 2 images: pick one"):
        vit_attention_maps(torch.ones(1, 2, 1, 13, 13), grid=GRID)
    with pytest.raises(DataError, match=r"self-attention \(L, H, N \+ 1, N \+ 1\)"):
        vit_attention_maps(torch.ones(1, 1, 13, 12), grid=GRID)


# ------------------------------------------------------------------------------------------- figures


def test_vit_figure_layout_and_overlays_are_the_expanded_maps() -> None:
    w = _hand_built(L=2, H=3)
    image = _image()
    fig = plot_vit_attention(image, w, patch_size=P)
    cls, rollout = vit_attention_maps(w, grid=GRID)
    images = _images_by_gid(fig)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 2 + 2 * (3 + 1)  # image and rollout, then L rows of H heads and the mean
    assert len(fig.axes) == len(panels) + 1  # and one colour bar
    expected = {"rollout": rollout, **{f"attention-{i}-{j}": cls[i, j] for i in range(2) for j in range(3)},
                **{f"attention-{i}-mean": cls[i].mean(0) for i in range(2)}}
    assert set(images) == {"image", *expected}
    extent = images["image"].get_extent()
    assert extent == [-0.5, GRID[1] * P - 0.5, GRID[0] * P - 0.5, -0.5]
    np.testing.assert_array_equal(images["image"].get_array(), image.permute(1, 2, 0).double().numpy())
    for gid, weights in expected.items():
        drawn = images[gid]
        np.testing.assert_array_equal(np.asarray(drawn.get_array()), patch_map_to_pixels(weights, P))
        assert drawn.get_extent() == extent  # same pixel grid as the image under it
        assert drawn.norm.vmin == 0.0 and drawn.norm.vmax == pytest.approx(weights.max())  # per-panel scale
    titles = [ax.get_title() for ax in panels]
    assert titles[:6] == ["image", "rollout", "head 0", "head 1", "head 2", "mean"]
    assert [ax.get_ylabel() for ax in panels if ax.get_ylabel()] == ["layer 0", "layer 1"]
    assert all(not ax.get_xticks().size and not ax.get_yticks().size for ax in panels)


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf"])
def test_vit_figure_strings_are_literal_and_it_saves(suffix: str, tmp_path: Path) -> None:
    fig = plot_vit_attention(_image(1), _hand_built(L=1, H=2), patch_size=P, label=BROKEN_MATH,
                             probability=0.875, title="$x$ <b>")
    (suptitle,) = fig.texts
    assert suptitle.get_text() == f"$x$ <b>\npredicted: {BROKEN_MATH} (p = 0.875)"
    assert suptitle.get_parse_math() is False
    path = save_figure(fig, tmp_path / f"vit{suffix}")  # drawing "$\frac{$" as mathtext would raise
    head = path.read_bytes()[:8]
    assert head.startswith({".png": b"\x89PNG", ".svg": b"<?xml", ".pdf": b"%PDF"}[suffix])
    if suffix == ".svg":
        assert "<!-- predicted: $\\frac{$ &lt;b&gt; (p = 0.875) -->" in path.read_text(encoding="utf-8")


def test_caption_figure_one_panel_per_word_and_exact_boxes(tmp_path: Path) -> None:
    words = ["a", "dog", BROKEN_MATH, "on", "the", "green", "grass", "."]
    maps = torch.rand(len(words), N, generator=torch.Generator().manual_seed(2))
    boxes = [None, (8, 16, 24, 32), None, (0, 0, 8, 8), None, None, (3, 5, 20, 9), None]
    fig = plot_caption_attention(_image(), words, maps, patch_size=P, boxes=boxes, title="$x$")
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == len(words)
    assert [ax.get_title() for ax in panels] == words
    assert all(ax.title.get_parse_math() is False for ax in panels)
    rows = sorted({round(ax.get_position().y0, 4) for ax in panels}, reverse=True)
    assert len(rows) == 2 and sum(round(ax.get_position().y0, 4) == rows[0] for ax in panels) == 6  # rows of 6
    for t, ax in enumerate(panels):
        overlay = [im for im in ax.images if im.get_gid() == f"step-{t}"]
        assert len(overlay) == 1
        np.testing.assert_array_equal(np.asarray(overlay[0].get_array()),
                                      patch_map_to_pixels(maps[t], P, grid=GRID))
        rects = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_gid() == f"box-{t}"]
        if boxes[t] is None:
            assert rects == []
            continue
        top, left, bottom, right = boxes[t]
        (rect,) = rects
        # imshow centres pixel (i, j) on (j, i): the box's outer edges are half a pixel out.
        assert (rect.get_x(), rect.get_y()) == (left - 0.5, top - 0.5)
        assert (rect.get_width(), rect.get_height()) == (right - left, bottom - top)
        assert ax.get_xlim() == (-0.5, GRID[1] * P - 0.5) and ax.get_ylim() == (GRID[0] * P - 0.5, -0.5)
    save_figure(fig, tmp_path / "caption.pdf")


def test_caption_figure_checks_its_inputs() -> None:
    image, maps = _image(), torch.rand(2, N)
    with pytest.raises(ConfigError, match="2 words but 1 boxes"):
        plot_caption_attention(image, ["a", "b"], maps, patch_size=P, boxes=[None])
    with pytest.raises(DataError, match=r"box 0 .* = \(0, 0, 25, 8\) is not a non-empty box inside the 24 x 32"):
        plot_caption_attention(image, ["a", "b"], maps, patch_size=P, boxes=[(0, 0, 25, 8), None])
    with pytest.raises(DataError, match="T = 3 words"):
        plot_caption_attention(image, ["a", "b", "c"], maps, patch_size=P)
    with pytest.raises(DataError, match="not a whole number of 5-pixel patches"):
        plot_caption_attention(image, ["a", "b"], maps, patch_size=5)


# ------------------------------------------------------------------------------------------- pages


def _assert_offline_and_escaped(page: str) -> None:
    for ref in ("http://", "https://", 'src="//', "src='//", "@import", "url("):
        assert ref not in page
    assert HOSTILE not in page and IMG_TAG not in page and "<img src=x" not in page
    inert = ("\\u003cimg src=x onerror=alert(1)\\u003e", html.escape(IMG_TAG))  # in the JSON data, in <title>
    assert "onerror" not in page.replace(inert[0], "").replace(inert[1], "")
    assert page.count("<script") == 2  # the data block and the page's own script, nothing injected
    assert page.count("</script>") == 2


def test_vit_page_is_offline_escaped_and_holds_the_weights(tmp_path: Path) -> None:
    w = torch.softmax(torch.randn(2, 1, 3, N + 1, N + 1, generator=torch.Generator().manual_seed(3)), -1)
    probabilities = {"cat": 0.15, HOSTILE: 0.7, IMG_TAG: 0.15}
    page = vit_attention_html(_image(), w, patch_size=P, probabilities=probabilities, title=HOSTILE)
    _assert_offline_and_escaped(page)
    assert "<title>&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;</title>" in page
    data = _data(page)
    assert data["kind"] == "vit" and data["title"] == HOSTILE
    assert data["label"] == HOSTILE and data["probability"] == 0.7  # the most probable class by default
    assert data["probabilities"] == [[HOSTILE, 0.7], [IMG_TAG, 0.15], ["cat", 0.15]]  # sorted, ties by name
    assert (data["layers"], data["heads"], data["grid"], data["patchSize"]) == (2, 3, list(GRID), P)
    np.testing.assert_allclose(data["weights"], np.round(w[:, 0].double().numpy(), 4), atol=1e-12)
    np.testing.assert_allclose(data["rollout"], np.round(attention_rollout(w[:, 0].double()).numpy(), 4),
                               atol=1e-12)
    assert max(len(str(x).split(".")[-1]) for x in np.ravel(data["weights"])) <= 4  # compact: 4 decimals
    path = save_html(page, tmp_path / "sub" / "vit.html")
    assert path.read_text(encoding="utf-8") == page


def test_caption_page_is_offline_escaped_and_holds_the_maps() -> None:
    words = ["a", HOSTILE, IMG_TAG, "dog"]
    maps = torch.rand(len(words), *GRID, generator=torch.Generator().manual_seed(4))
    boxes = [None, (0, 8, 16, 24), None, (8, 0, 24, 8)]
    page = caption_attention_html(_image(), words, maps, patch_size=P, boxes=boxes, title=IMG_TAG)
    _assert_offline_and_escaped(page)
    data = _data(page)
    assert data["kind"] == "caption" and data["words"] == words and data["title"] == IMG_TAG
    np.testing.assert_allclose(data["maps"], np.round(maps.reshape(len(words), N).double().numpy(), 4), atol=1e-12)
    assert data["boxes"] == [None, [0, 8, 16, 24], None, [8, 0, 24, 8]]


# ------------------------------------------------------------------------------------------- in a browser


def _patch_centre(tools, r: int, c: int) -> tuple[float, float]:
    box = tools.js("(() => { const r = document.getElementById('image').getBoundingClientRect();"
                   " return [r.x, r.y, r.width, r.height]; })()")
    return box[0] + (c + 0.5) * box[2] / GRID[1], box[1] + (r + 0.5) * box[3] / GRID[0]


def _open(tools, page: str, path: Path) -> None:
    save_html(page, path)
    tools.call("Page.addScriptToEvaluateOnNewDocument",
               source="window.__alerts = []; window.alert = m => window.__alerts.push(String(m));")
    tools.call("Page.navigate", url=path.as_uri())
    tools.wait_for("document.documentElement.dataset.ready === '1'")


@pytest.mark.browser
def test_vit_page_in_headless_chromium(devtools, tmp_path: Path) -> None:
    w = _known()
    page = vit_attention_html(_image(), w, patch_size=P, label=HOSTILE, probabilities={HOSTILE: 0.9, "x": 0.1},
                              title=IMG_TAG)
    _open(devtools, page, tmp_path / "vit.html")
    stage = "document.getElementById('stage').dataset"
    assert devtools.js("document.title") == IMG_TAG
    assert devtools.js("document.getElementById('pred-label').textContent") == HOSTILE
    assert devtools.js("document.getElementById('pred-prob').textContent") == "(p = 0.900)"
    assert devtools.js("Array.from(document.querySelectorAll('#probs td.name')).map(e => e.textContent)") == [
        HOSTILE, "x"]
    assert devtools.js("document.querySelectorAll('iframe, object, embed, [onerror]').length") == 0

    # Default: where the class token looks (mean over heads) -> patch 5, drawn brightest on the canvas.
    assert devtools.js(f"{stage}.mode") == "cls" and devtools.js(f"{stage}.top") == "5"
    brightest = devtools.js("Array.from(document.getElementById('overlay').getContext('2d')"
                            ".getImageData(1, 1, 1, 1).data)")  # patch 5 = canvas pixel (5 % 4, 5 // 4)
    assert brightest == [252, 255, 164, 255]

    devtools.js("(() => { const s = document.getElementById('head'); s.value = '0';"
                " s.dispatchEvent(new Event('change')); })()")
    r, c = 2, 1  # patch 9
    x, y = _patch_centre(devtools, r, c)
    devtools.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
    devtools.wait_for(f"{stage}.patch === '9'")
    assert devtools.js(f"{stage}.mode") == "to"
    assert devtools.js(f"{stage}.top") == "8"  # patch 8 is the query that attends most to patch 9 (its column)
    status = devtools.js("document.getElementById('status').textContent")
    assert status.startswith("patch 9 (row 2, column 1): what attends to it") and "head 0" in status

    for kind in ("mousePressed", "mouseReleased"):
        devtools.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
    devtools.wait_for(f"{stage}.mode === 'from'")
    assert devtools.js(f"{stage}.top") == "10"  # patch 9 looks most at patch 10 (its row)
    assert "where it looks" in devtools.js("document.getElementById('status').textContent")

    devtools.call("Input.dispatchMouseEvent", type="mouseMoved", x=2, y=2)  # off the image: class token again
    devtools.wait_for(f"{stage}.mode === 'cls'")
    assert devtools.js(f"{stage}.patch") is None and devtools.js(f"{stage}.top") == "5"

    assert devtools.js("window.__alerts") == []
    assert devtools.errors() == []
    assert [u for u in devtools.requests() if not u.startswith(("file:", "data:"))] == []


@pytest.mark.browser
def test_caption_page_in_headless_chromium(devtools, tmp_path: Path) -> None:
    words = ["a", HOSTILE, "dog"]
    maps = torch.full((3, N), 0.01)
    for t, k in enumerate((0, 6, 11)):
        maps[t, k] = 0.9
    boxes = [None, (8, 16, 24, 32), None]
    _open(devtools, caption_attention_html(_image(), words, maps, patch_size=P, boxes=boxes), tmp_path / "cap.html")
    stage = "document.getElementById('stage').dataset"
    assert devtools.js("Array.from(document.querySelectorAll('#words .word')).map(e => e.textContent)") == words
    assert devtools.js(f"{stage}.step") == "0" and devtools.js(f"{stage}.top") == "0"
    assert devtools.js("document.getElementById('box').hidden") is True

    def press(key: str, code: int) -> None:
        for kind in ("keyDown", "keyUp"):
            devtools.call("Input.dispatchKeyEvent", type=kind, key=key, code=key, windowsVirtualKeyCode=code)

    press("ArrowRight", 39)
    devtools.wait_for(f"{stage}.step === '1'")
    assert devtools.js(f"{stage}.top") == "6"
    assert devtools.js("document.querySelector('#words .word.selected').textContent") == HOSTILE
    assert devtools.js("document.getElementById('status').textContent").startswith(f"word 2 of 3: \u201c{HOSTILE}")
    # The outline sits on the box's pixels: (top, left, bottom, right) = (8, 16, 24, 32) times the zoom.
    outline = devtools.js("(() => { const i = document.getElementById('image').getBoundingClientRect(),"
                          " b = document.getElementById('box').getBoundingClientRect(), z = i.width / 32;"
                          " return [(b.y - i.y) / z, (b.x - i.x) / z, (b.bottom - i.y) / z, (b.right - i.x) / z]; })()")
    assert outline == pytest.approx([8, 16, 24, 32], abs=0.1)
    press("ArrowRight", 39)
    devtools.wait_for(f"{stage}.step === '2'")
    assert devtools.js("document.getElementById('box').hidden") is True
    press("ArrowRight", 39)  # stays on the last word
    assert devtools.js(f"{stage}.step") == "2"
    devtools.click("#words .word[data-index='0']")
    devtools.wait_for(f"{stage}.step === '0'")

    assert devtools.js("window.__alerts") == []
    assert devtools.errors() == []
    assert [u for u in devtools.requests() if not u.startswith(("file:", "data:"))] == []
