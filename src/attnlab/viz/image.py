"""Attention over image patches: a ViT's class-token maps and rollout, a captioner's attention per word.

Conventions. An image is ``(C, height, width)`` with ``C`` in {1, 3}, or ``(height, width)``: a torch tensor or a
numpy array, float in ``[0, 1]`` or uint8 (0-255). Patches are ``P x P`` squares numbered row-major over the
``(gh, gw) = (height / P, width / P)`` grid: patch ``k`` is at row ``k // gw``, column ``k % gw``. A patch map is
``(gh, gw)`` or ``(N,)`` with ``N = gh * gw``. Patch ``(r, c)`` covers pixels ``[r*P, (r+1)*P) x [c*P, (c+1)*P)``,
and image and overlay are drawn with the same imshow extent, so each weight sits exactly on its patch. A box is
``(top, left, bottom, right)`` in pixels, bottom and right exclusive; imshow puts pixel centres on integers, so it
is drawn as a ``Rectangle`` at ``(left - 0.5, top - 0.5)`` of size ``(right - left, bottom - top)``.

Figures use matplotlib (imported lazily, Agg canvas, no pyplot state), scale colours per panel to the panel's
largest weight and draw every string literally. Pages are self-contained like :mod:`attnlab.viz.html`: no
network, a Content-Security-Policy by hash, the image as a base64 PNG and every string as JSON data put on the
page with ``textContent`` only.

Dimension legend: ``L`` layers, ``H`` heads, ``N`` patches, ``T`` generated words, ``P`` patch side.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from attnlab.core.errors import ConfigError, DataError
from attnlab.viz import fonts, i18n
from attnlab.viz.analysis import _tensor, attention_rollout
from attnlab.viz.heatmap import _new_figure, _wrap
from attnlab.viz.html import PAGE_HEAD, _asset, _csp_hash, fill_page, json_for_script

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # (top, left, bottom, right) in pixels, bottom and right exclusive
_LARGE = 2_000_000  # weights on one page; past this it loads slowly, so say so
_WORDS_PER_ROW = 6
_BOX_COLOUR = "#00e5ff"  # cyan: visible on inferno's dark and bright ends alike


# ---------------------------------------------------------------------------------------------- inputs


def _numpy(x: Any, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.to(torch.float64) if x.is_floating_point() else x
        return x.numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError):
        raise DataError(f"{what} must be a tensor or an array, got {type(x).__name__}") from None


def to_display(image: Any) -> np.ndarray:
    """The image as matplotlib draws it: ``(height, width)`` grayscale or ``(height, width, 3)`` RGB, float64 in [0, 1].

    Args:
        image: ``(C, height, width)`` with ``C`` in {1, 3}, or ``(height, width)``; float in ``[0, 1]`` or integer
            in ``0..255`` (uint8).
    """
    a = _numpy(image, "image")
    if a.ndim == 3 and a.shape[0] in (1, 3):
        a = a[0] if a.shape[0] == 1 else np.moveaxis(a, 0, -1)  # (height, width) or (height, width, 3)
    elif a.ndim != 2:
        hint = " (channels last? pass image.transpose(2, 0, 1))" if a.ndim == 3 and a.shape[-1] in (1, 3) else ""
        raise DataError(f"an image must be (C, height, width) with C in {{1, 3}} or (height, width), "
                        f"got shape {a.shape}{hint}")
    if a.size == 0:
        raise DataError(f"the image is empty (shape {a.shape})")
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise DataError(f"image values must be float in [0, 1] or uint8, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.integer):
        if a.min() < 0 or a.max() > 255:
            raise DataError(f"integer image values must be in 0..255, got {a.min()}..{a.max()}")
        return a.astype(np.float64) / 255.0
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise DataError("the image has NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if lo < -1e-6 or hi > 1.0 + 1e-6:  # a little slack for rounding in a de-normalisation
        raise DataError(f"float image values must be in [0, 1], got [{lo:.4g}, {hi:.4g}]: undo the input "
                        "normalisation (image * std + mean) or pass uint8")
    return np.clip(a, 0.0, 1.0)


def _positive(n: Any) -> bool:
    return not isinstance(n, bool) and isinstance(n, int | np.integer) and n >= 1


def _check_patch_size(patch_size: Any) -> int:
    if not _positive(patch_size):
        raise ConfigError(f"patch_size must be a positive integer, got {patch_size!r:.40}")
    return int(patch_size)


def _check_grid(grid: Any) -> tuple[int, int]:
    if not (isinstance(grid, tuple | list) and len(grid) == 2 and all(map(_positive, grid))):
        raise ConfigError(f"grid must be (rows, columns): two positive integers, got {grid!r:.40}")
    return int(grid[0]), int(grid[1])


def _image_grid(pixels: np.ndarray, patch_size: int) -> tuple[int, int]:
    """The patch grid ``(gh, gw)`` of an image whose sides are whole numbers of patches."""
    height, width = pixels.shape[:2]
    if height % patch_size or width % patch_size:
        raise DataError(f"an image of {height} x {width} pixels is not a whole number of {patch_size}-pixel "
                        "patches: crop it to the part the model saw")
    return height // patch_size, width // patch_size


def _as_grid(weights: Any, grid: tuple[int, int] | None, what: str = "patch map") -> np.ndarray:
    """A patch map as ``(gh, gw)`` float64: a flat ``(N,)`` vector is reshaped row-major."""
    w = _numpy(weights, what).astype(np.float64)
    if grid is None and w.ndim == 1:
        side = math.isqrt(w.size)
        if side * side != w.size or side == 0:
            raise DataError(f"a {what} of {w.size} weights is not a square grid: pass grid=(rows, columns)")
        grid = (side, side)
    if w.ndim == 2 and grid is None:
        grid = w.shape
    if w.ndim not in (1, 2):
        raise DataError(f"a {what} must be (rows, columns) or a flat (N,) vector, got shape {w.shape}")
    gh, gw = _check_grid(grid)
    if w.size != gh * gw or (w.ndim == 2 and w.shape != (gh, gw)):
        raise DataError(f"a {what} of shape {w.shape} does not fit the {gh} x {gw} patch grid: expected "
                        f"N = {gh * gw} weights")
    if not np.isfinite(w).all():
        raise DataError(f"the {what} has NaN or infinite weights")
    return w.reshape(gh, gw)  # (gh, gw), row-major


def patch_map_to_pixels(weights: Any, patch_size: int, grid: tuple[int, int] | None = None) -> np.ndarray:
    """Expand one weight per patch to one per pixel (nearest neighbour): ``(gh * P, gw * P)`` float64.

    Patch ``(r, c)`` covers exactly pixels ``[r*P:(r+1)*P, c*P:(c+1)*P]``.

    Args:
        weights: ``(gh, gw)``, or ``(N,)`` read row-major (a square grid unless ``grid`` is given).
        patch_size: ``P``, the side of a patch in pixels.
        grid: ``(gh, gw)``; needed for a flat vector over a non-square grid.
    """
    size = _check_patch_size(patch_size)
    w = _as_grid(weights, grid)  # (gh, gw)
    return np.repeat(np.repeat(w, size, axis=0), size, axis=1)  # (gh * P, gw * P)


def _self_attention(attention: Any, grid: tuple[int, int]) -> torch.Tensor:
    """A ViT's self-attention as float64 ``(L, H, N + 1, N + 1)``."""
    if isinstance(attention, torch.Tensor | np.ndarray):
        w = torch.as_tensor(_numpy(attention, "attention")).double()
    else:  # capture results, AttentionMaps (their encoder self-attention), nested lists
        w = _tensor(attention, None).double()
    if w.dim() == 5:
        if w.shape[1] != 1:
            raise DataError(f"attention holds a batch of {w.shape[1]} images: pick one, e.g. attention[:, i:i + 1]")
        w = w[:, 0]  # (L, H, N + 1, N + 1)
    if w.dim() != 4 or w.shape[-1] != w.shape[-2]:
        raise DataError(f"attention must be self-attention (L, H, N + 1, N + 1) or (L, 1, H, N + 1, N + 1), "
                        f"got shape {tuple(w.shape)}")
    gh, gw = grid
    if w.shape[-1] != gh * gw + 1:
        raise DataError(f"attention over {w.shape[-1]} tokens does not fit the {gh} x {gw} patch grid: expected "
                        f"{gh * gw + 1} (the class token, then {gh * gw} patches)")
    if not torch.isfinite(w).all():
        raise DataError("the attention has NaN or infinite weights")
    return w


def vit_attention_maps(attention: Any, *, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The class token's attention over the patches, per layer and head, and its rollout over all layers.

    Args:
        attention: self-attention ``(L, H, N + 1, N + 1)`` or ``(L, 1, H, N + 1, N + 1)`` (token 0 is the class
            token, then the patches row-major), e.g. ``VisionTransformer(..., need_weights=True).encoder_self``.
        grid: ``(gh, gw)`` with ``gh * gw = N``.

    Returns:
        ``(L, H, gh, gw)``: row 0 of each head's matrix without its class-token column (so each map sums to 1
        minus what the class token keeps for itself); and ``(gh, gw)``: row 0 of
        :func:`~attnlab.viz.analysis.attention_rollout` (Abnar & Zuidema, 2020) over the patches, renormalised
        to sum to 1.
    """
    gh, gw = _check_grid(grid)
    w = _self_attention(attention, (gh, gw))  # (L, H, N + 1, N + 1)
    L, H = w.shape[:2]
    cls = w[:, :, 0, 1:].reshape(L, H, gh, gw)  # (L, H, gh, gw)
    rollout = attention_rollout(w)[0, 1:].double()  # (N,): from the class token to each patch (computed in fp32)
    rollout = rollout / rollout.sum().clamp_min(1e-12)
    return cls.numpy(), rollout.reshape(gh, gw).numpy()  # (L, H, gh, gw), (gh, gw)


def _check_text(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ConfigError(f"{name} must be a string or None, got {type(value).__name__}")


def _check_probability(p: Any, name: str = "probability") -> float:
    try:
        value = float(p) if not isinstance(p, bool | str | bytes) else None
    except (TypeError, ValueError):
        value = None
    if value is None:
        raise DataError(f"{name} must be a number in [0, 1], got {type(p).__name__}")
    if not 0.0 <= value <= 1.0:  # also false for NaN
        raise DataError(f"{name} {value:.4g} is not in [0, 1]")
    return value


def _check_words(words: Any) -> list[str]:
    if isinstance(words, str | bytes):
        raise ConfigError("words must be a list of strings, not one string")
    items = list(words)
    if not items:
        raise ConfigError("no words to show: pass the generated words, one per attention map")
    for i, word in enumerate(items):
        if not isinstance(word, str):
            raise ConfigError(f"word {i} has type {type(word).__name__}, not str")
    return items


def _step_maps(maps: Any, steps: int, grid: tuple[int, int]) -> np.ndarray:
    """Captioning attention as ``(T, gh, gw)``, from ``(T, N)`` or ``(T, gh, gw)``."""
    m = _numpy(maps, "maps")
    if m.ndim not in (2, 3) or len(m) != steps:
        raise DataError(f"maps must be (T, N) or (T, rows, columns) with T = {steps} words, got shape {m.shape}")
    return np.stack([_as_grid(row, grid, what=f"map of word {t}") for t, row in enumerate(m)])  # (T, gh, gw)


def _check_boxes(boxes: Any, steps: int, size: tuple[int, int]) -> list[Box | None]:
    if boxes is None:
        return [None] * steps
    items = list(boxes)
    if len(items) != steps:
        raise ConfigError(f"{steps} words but {len(items)} boxes: give one box (or None) per word")
    height, width = size
    out: list[Box | None] = []
    for t, box in enumerate(items):
        if box is None:
            out.append(None)
            continue
        try:
            top, left, bottom, right = (int(v) for v in box)
        except (TypeError, ValueError):
            raise ConfigError(f"box {t} must be (top, left, bottom, right) in pixels, got {box!r:.60}") from None
        if not (0 <= top < bottom <= height and 0 <= left < right <= width):
            raise DataError(f"box {t} (top, left, bottom, right) = {(top, left, bottom, right)} is not a non-empty "
                            f"box inside the {height} x {width} image (bottom and right are exclusive)")
        out.append((top, left, bottom, right))
    return out


# ---------------------------------------------------------------------------------------------- figures


def _colormap(cmap: str) -> Colormap:
    from matplotlib import colormaps

    try:
        return colormaps[cmap]
    except KeyError:
        raise ConfigError(f"unknown colour map {cmap!r:.60}: try 'inferno', 'viridis' or 'magma'") from None


def _check_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must be a number in [0, 1], got {alpha!r:.40}")
    return float(alpha)


def _extent(pixels: np.ndarray) -> tuple[float, float, float, float]:
    height, width = pixels.shape[:2]
    return -0.5, width - 0.5, height - 0.5, -0.5  # imshow's own: pixel (i, j) centred on (j, i)


def _show_image(ax: Axes, pixels: np.ndarray, gid: str | None = None) -> None:
    gray = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0} if pixels.ndim == 2 else {}
    ax.imshow(pixels, interpolation="nearest", extent=_extent(pixels), gid=gid, **gray)
    ax.set(xticks=[], yticks=[])  # no axis, but keep the axes on for a "layer i" label
    ax.spines[:].set_visible(False)


def _overlay(ax: Axes, pixels: np.ndarray, weights: np.ndarray, patch_size: int, colormap: Colormap,
             alpha: float, gid: str) -> None:
    """The image with one patch map on top, its colours scaled to the map's largest weight."""
    _show_image(ax, pixels)
    over = patch_map_to_pixels(weights, patch_size)  # (height, width)
    ax.imshow(over, cmap=colormap, vmin=0.0, vmax=max(float(weights.max()), 1e-12), alpha=alpha,
              interpolation="nearest", extent=_extent(pixels), gid=gid)


def _colorbar(fig: Figure, colormap: Colormap) -> None:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), colormap), ax=fig.axes, shrink=0.6,
                 label="weight / panel's largest weight")


def _verdict(label: str | None, probability: float | None) -> str | None:
    if label is None and probability is None:
        return None
    text = "predicted" if label is None else f"predicted: {label}"
    return text if probability is None else f"{text} (p = {probability:.3f})"


def _suptitle(fig: Figure, lines: list[str | None]) -> None:
    text = "\n".join(_wrap(fonts.renderable(" ".join(line.split())), fig) for line in lines if line)
    if text:
        fig.suptitle(text, parse_math=False)


def plot_vit_attention(image: Any, attention: Any, *, patch_size: int, label: str | None = None,
                       probability: float | None = None, title: str | None = None, alpha: float = 0.6,
                       cmap: str = "inferno") -> Figure:
    """Where a ViT's class token looks, per layer and head, over the image it classified.

    Layout: a grid of ``L + 1`` rows and ``H + 1`` columns with ``2 + L * (H + 1)`` image panels. Row 0 holds
    the image (gid ``"image"``) and the rollout over all layers (gid ``"rollout"``); row ``i + 1`` is layer ``i``
    (labelled ``layer i``), column ``j`` head ``j`` (gid ``"attention-{i}-{j}"``) and the last column the mean
    over heads (gid ``"attention-{i}-mean"``). The gid is on the overlay, an ``AxesImage`` whose array is
    :func:`patch_map_to_pixels` of the panel's map. One colour bar: colours are scaled per panel to its largest
    weight. Save with :func:`attnlab.viz.heatmap.save_figure`.

    Args:
        image: the classified image (see the module's conventions); its sides are whole numbers of patches.
        attention: ``(L, H, N + 1, N + 1)`` or ``(L, 1, H, N + 1, N + 1)``, as for :func:`vit_attention_maps`.
        patch_size: ``P``.
        label: the predicted label, shown in the title.
        probability: the model's probability for ``label``.
        title: a first title line.
        alpha: opacity of the attention overlay.
        cmap: a matplotlib colour map for the overlay.
    """
    from matplotlib import rc_context

    pixels = to_display(image)
    size = _check_patch_size(patch_size)
    maps, rollout = vit_attention_maps(attention, grid=_image_grid(pixels, size))  # (L, H, gh, gw), (gh, gw)
    label, title = _check_text(label, "label"), _check_text(title, "title")
    probability = None if probability is None else _check_probability(probability)
    colormap, alpha = _colormap(cmap), _check_alpha(alpha)
    L, H = maps.shape[:2]
    panel = max(1.0, min(2.0, 16.0 / (H + 1)))  # inches
    with rc_context({"font.family": fonts.families(), "svg.fonttype": "path", "pdf.fonttype": 3}):
        fig = _new_figure((H + 1) * panel + 1.6, (L + 1) * (panel + 0.3) + 0.9)
        spec = fig.add_gridspec(L + 1, H + 1)
        ax = fig.add_subplot(spec[0, 0])
        _show_image(ax, pixels, gid="image")
        ax.set_title("image", fontsize=8)
        ax = fig.add_subplot(spec[0, 1])
        _overlay(ax, pixels, rollout, size, colormap, alpha, gid="rollout")
        ax.set_title("rollout", fontsize=8)
        for i in range(L):
            for j in range(H + 1):
                ax = fig.add_subplot(spec[i + 1, j])
                head = maps[i, j] if j < H else maps[i].mean(0)  # (gh, gw)
                _overlay(ax, pixels, head, size, colormap, alpha, gid=f"attention-{i}-{j if j < H else 'mean'}")
                if i == 0:
                    ax.set_title(f"head {j}" if j < H else "mean", fontsize=8)
                if j == 0:
                    ax.set_ylabel(f"layer {i}", fontsize=8)
        _colorbar(fig, colormap)
        _suptitle(fig, [title, _verdict(label, probability)])
    return fig


def plot_caption_attention(image: Any, words: Sequence[str], maps: Any, *, patch_size: int,
                           boxes: Sequence[tuple[int, int, int, int] | None] | None = None, title: str | None = None,
                           alpha: float = 0.6, cmap: str = "inferno") -> Figure:
    """"Show, attend and tell" (Xu et al., 2015, fig. 3): the image under each generated word's attention.

    One panel per word, left to right in rows of at most 6, titled with the word (drawn literally); the overlay of
    word ``t`` has gid ``"step-{t}"`` and its box, when given, is a ``Rectangle`` with gid ``"box-{t}"`` at
    ``(left - 0.5, top - 0.5)``, ``right - left`` wide and ``bottom - top`` high (imshow pixel coordinates).
    Colours are scaled per panel to its largest weight. Save with :func:`attnlab.viz.heatmap.save_figure`.

    Args:
        image: the captioned image (see the module's conventions); its sides are whole numbers of patches.
        words: the ``T`` generated words.
        maps: ``(T, N)`` or ``(T, gh, gw)``: the attention over the patches when word ``t`` was generated.
        patch_size: ``P``, the side in pixels of one attended region.
        boxes: one ``(top, left, bottom, right)`` box in pixels (bottom, right exclusive) or ``None`` per word,
            e.g. the ground-truth object a word names.
        title: the figure title.
        alpha: opacity of the attention overlay.
        cmap: a matplotlib colour map for the overlay.
    """
    from matplotlib import rc_context
    from matplotlib.patches import Rectangle

    pixels = to_display(image)
    size = _check_patch_size(patch_size)
    words = _check_words(words)
    steps = _step_maps(maps, len(words), _image_grid(pixels, size))  # (T, gh, gw)
    box_list = _check_boxes(boxes, len(words), pixels.shape[:2])
    title = _check_text(title, "title")
    colormap, alpha = _colormap(cmap), _check_alpha(alpha)
    cols = min(_WORDS_PER_ROW, len(words))
    rows = math.ceil(len(words) / cols)
    panel = 2.2  # inches
    with rc_context({"font.family": fonts.families(), "svg.fonttype": "path", "pdf.fonttype": 3}):
        fig = _new_figure(cols * panel + 1.4, rows * (panel + 0.35) + (0.7 if title else 0.2))
        axes = fig.subplots(rows, cols, squeeze=False).flatten()
        for t, ax in enumerate(axes):
            if t >= len(words):
                ax.remove()
                continue
            _overlay(ax, pixels, steps[t], size, colormap, alpha, gid=f"step-{t}")
            ax.set_title(fonts.labels([words[t]], max_chars=30)[0], fontsize=10, parse_math=False)
            if box_list[t] is not None:
                top, left, bottom, right = box_list[t]
                ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False,
                                       edgecolor=_BOX_COLOUR, linewidth=1.5, gid=f"box-{t}"))
            extent = _extent(pixels)
            ax.set_xlim(extent[0], extent[1])
            ax.set_ylim(extent[2], extent[3])
        _colorbar(fig, colormap)
        _suptitle(fig, [title])
    return fig


# ---------------------------------------------------------------------------------------------- pages

_PAGE = PAGE_HEAD + """<header>
  <h1 id="title"></h1>
  <div class="controls">{{CONTROLS}}
    <label>{{overlay}} <input id="opacity" type="range" min="0" max="1" step="0.05" value="0.6"></label>
  </div>
  <p class="help">{{HELP}}</p>
</header>
<main>
  <figure>
    <div id="stage" class="stage"><img id="image" alt="{{imageAlt}}"><canvas id="overlay"></canvas>
      <div id="box" class="box" hidden></div><div id="cursor" class="cursor" hidden></div></div>
    <figcaption>
      <p id="status" class="status" aria-live="polite"></p>
      <div class="legend"><span>0</span><span id="bar" class="bar"></span><span id="vmax"></span>
        <span class="note">{{scaleNote}}</span></div>
    </figcaption>
  </figure>
  <section class="side">{{SIDE}}</section>
</main>
<script type="application/json" id="attnlab-image-data">{{DATA}}</script>
<script>{{JS}}</script>
</body>
</html>
"""

# Each kind's parts of the page: constant markup whose {{camelCase}} placeholders are interface strings.
_PARTS = {
    "vit": {
        "CONTROLS": '\n    <label>{{layer}} <select id="layer"></select></label>'
                    '\n    <label>{{head}} <select id="head"></select></label>',
        "HELP": "{{vitHelp}}",
        "SIDE": '<p class="verdict" id="verdict">{{predicted}} <b id="pred-label"></b> <span id="pred-prob"></span>'
                '</p>\n    <table id="probs"><caption>{{classProbs}}</caption>'
                '<thead><tr><th>{{colClass}}</th><th>{{colP}}</th></tr></thead><tbody></tbody></table>',
    },
    "caption": {
        "CONTROLS": '\n    <button id="play" type="button">{{play}}</button>',
        "HELP": "{{captionHelp}}",
        "SIDE": '<h2>{{captionHeading}}</h2><p id="words" class="words"></p>',
    },
}
# The template of each kind's page: its parts put in first (they hold no data), then filled in one pass.
_TEMPLATES = {kind: re.sub(r"\{\{(CONTROLS|HELP|SIDE)\}\}", lambda m, p=parts: p[m.group(1)], _PAGE)
              for kind, parts in _PARTS.items()}


def _png_base64(pixels: np.ndarray) -> str:
    from PIL import Image  # installed with matplotlib

    data = np.round(pixels * 255.0).astype(np.uint8)  # (height, width) or (height, width, 3)
    buffer = io.BytesIO()
    Image.fromarray(data, mode="L" if data.ndim == 2 else "RGB").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _rounded(x: np.ndarray | torch.Tensor, decimals: int = 4) -> list[Any]:
    return np.round(np.asarray(x, dtype=np.float64), decimals).tolist()


def _page(kind: str, payload: dict[str, Any], ui: dict[str, str], lang: str) -> str:
    from attnlab import __version__

    size = payload.pop("size")
    if size > _LARGE:
        log.warning("the %s page holds %d weights; it may load slowly (select layers first)", kind, size)
    css, js = _asset("image.css"), _asset("image.js")
    csp = (f"default-src 'none'; script-src {_csp_hash(js)}; style-src {_csp_hash(css)}; img-src data:; "
           "base-uri 'none'; form-action 'none'")
    fields = {"LANG": i18n.html_lang(lang), "CSP": csp, "VERSION": html.escape(__version__),
              "TITLE": html.escape(payload["title"]), "CSS": css, "JS": js,
              "DATA": json_for_script({"kind": kind, **payload, "ui": ui})}
    return fill_page(_TEMPLATES[kind], fields, ui)


def _image_payload(pixels: np.ndarray, patch_size: int, title: str) -> dict[str, Any]:
    height, width = pixels.shape[:2]
    return {"title": title, "image": _png_base64(pixels), "height": height, "width": width,
            "patchSize": patch_size, "grid": list(_image_grid(pixels, patch_size))}


def vit_attention_html(image: Any, attention: Any, *, patch_size: int, label: str | None = None,
                       probabilities: Mapping[str, float] | None = None, title: str | None = None,
                       lang: str = "en") -> str:
    """One self-contained page to explore a ViT's attention over the image it classified.

    The image is drawn large with the attention on top. Selectors pick the layer and the head (each head,
    ``mean`` over heads, or ``rollout`` over all layers). With the mouse off the image the page shows where the
    class token looks (row 0 of the matrix); hovering a patch shows what attends to it (its column, over the
    patch queries); a click toggles to where that patch looks (its row) and back. The caption under the image
    states the mode; the hovered patch index is in the stage's ``data-patch`` attribute and the most-weighted
    patch shown in ``data-top``. Beside it: the predicted label with its probability and the top ten classes.
    Weights are rounded to 4 decimals.

    Args:
        image: the classified image (see the module's conventions).
        attention: ``(L, H, N + 1, N + 1)`` or ``(L, 1, H, N + 1, N + 1)``, as for :func:`vit_attention_maps`.
        patch_size: ``P``.
        label: the predicted label; by default the most probable class in ``probabilities``.
        probabilities: each class's probability.
        title: the page's heading and tab title; by default "ViT attention" in ``lang``.
        lang: the language of the page's interface, ``"en"`` or ``"zh"`` (simplified Chinese).

    Returns:
        the page; write it with :func:`save_html`.
    """
    ui = i18n.strings("image", lang)
    pixels = to_display(image)
    size = _check_patch_size(patch_size)
    w = _self_attention(attention, _image_grid(pixels, size))  # (L, H, N + 1, N + 1)
    label, title = _check_text(label, "label"), _check_text(title, "title")
    probs: list[list[Any]] = []
    if probabilities is not None:
        for name, p in probabilities.items():
            if not isinstance(name, str):
                raise ConfigError(f"class names must be strings, got {type(name).__name__}")
            probs.append([name, _check_probability(p, f"probability of class {len(probs)}")])
        probs.sort(key=lambda item: (-item[1], item[0]))
    if label is None and probs:
        label = probs[0][0]
    probability = dict(probs).get(label) if label is not None else None
    rollout = attention_rollout(w)  # (N + 1, N + 1)
    payload = {**_image_payload(pixels, size, title if title is not None else ui["vitTitle"]),
               "layers": w.shape[0], "heads": w.shape[1], "weights": _rounded(w), "rollout": _rounded(rollout),
               "label": label, "probability": probability, "probabilities": probs,
               "size": w.numel() + rollout.numel()}
    return _page("vit", payload, ui, lang)


def caption_attention_html(image: Any, words: Sequence[str], maps: Any, *, patch_size: int,
                           boxes: Sequence[tuple[int, int, int, int] | None] | None = None,
                           title: str | None = None, lang: str = "en") -> str:
    """One self-contained page that steps through a generated caption, word by word, over the image.

    The caption's words are buttons; clicking one, pressing ``←``/``→`` (``Home``/``End``) or the play button
    shows that word's attention over the image and outlines its box when known. The stage's ``data-step``
    attribute holds the shown word's index. Weights are rounded to 4 decimals.

    Args:
        image: the captioned image (see the module's conventions).
        words: the ``T`` generated words.
        maps: ``(T, N)`` or ``(T, gh, gw)``, as for :func:`plot_caption_attention`.
        patch_size: ``P``.
        boxes: one ``(top, left, bottom, right)`` box in pixels (bottom, right exclusive) or ``None`` per word.
        title: the page's heading and tab title; by default "caption attention" in ``lang``.
        lang: the language of the page's interface, ``"en"`` or ``"zh"`` (simplified Chinese).

    Returns:
        the page; write it with :func:`save_html`.
    """
    ui = i18n.strings("image", lang)
    pixels = to_display(image)
    size = _check_patch_size(patch_size)
    words = _check_words(words)
    steps = _step_maps(maps, len(words), _image_grid(pixels, size))  # (T, gh, gw)
    box_list = _check_boxes(boxes, len(words), pixels.shape[:2])
    title = _check_text(title, "title")
    payload = {**_image_payload(pixels, size, title if title is not None else ui["captionTitle"]),
               "words": words, "maps": _rounded(steps.reshape(len(words), -1)),  # (T, N)
               "boxes": [None if b is None else list(b) for b in box_list], "size": steps.size}
    return _page("caption", payload, ui, lang)


def save_html(html: str, path: str | Path) -> Path:
    """Write a page (UTF-8) to ``path``, creating the parent folder; returns the path."""
    if not isinstance(html, str):
        raise ConfigError(f"save_html writes a page given as a string, got {type(html).__name__}")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(html, encoding="utf-8")
    return p
