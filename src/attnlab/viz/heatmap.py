"""Static attention figures with matplotlib (imported lazily, Agg canvas, no pyplot state).

One alignment (queries x keys, e.g. target x source) or a grid of layers x heads, with token labels in any
script (see :mod:`attnlab.viz.fonts`; tokens shown by :func:`attnlab.viz.labels.display_token`, so ``"▁"`` is drawn
as ``"␣"``), a colour bar and titles, saved as PNG, SVG or PDF. Long sequences stay readable: cells shrink down to a
minimum size, then only every n-th label is written; and no figure is larger than :data:`MAX_PIXELS` per side.

Dimension legend: ``L`` layers, ``H`` heads, ``Tq``/``Tk`` query/key length.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnlab.core.errors import ConfigError
from attnlab.viz import fonts
from attnlab.viz.labels import display_token, display_tokens
from attnlab.viz.views import AttentionView, as_views, pick_view, select

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FORMATS = (".png", ".svg", ".pdf")
MAX_PIXELS = 4000
"""The most pixels per side of a figure at its ``dpi`` (inches are ``MAX_PIXELS / dpi``). Unbounded, 2,000 tokens
made a 24,000 x 24,000-pixel PNG that image libraries refuse to open; longer sequences get smaller cells instead."""
_MIN_CELL = 0.08  # inches per token below which cells are too small to count by eye: from there labels are numbered
_LABEL_PITCH = 1.25  # font sizes per tick label along an axis at the least, so that labels never overlap
_AXIS_NAMES = {"cross": ("target (queries)", "source (keys)")}


def _short_layer_name(name: str, index: int) -> str:
    """A panel label: the name itself if short, else ``layer N`` from the module path (``decoder.layers.2.x`` ->
    ``layer 2``: the model's own layer number, also after one layer was selected), else the panel's index."""
    if len(name) <= 12:
        return name
    found = re.search(r"(?:^|\.)(\d+)(?:\.|$)", name)
    return f"layer {found.group(1) if found else index}"


def plot_attention(weights: Any, query_tokens: Sequence[str] | None = None, key_tokens: Sequence[str] | None = None,
                   path: str | Path | None = None, *, kind: str | None = None, layer: int | None = None,
                   head: int | str | None = None, batch: int = 0, title: str | None = None, cmap: str = "viridis",
                   max_labels: int = 40, dpi: int = 150) -> Figure:
    """Draw attention weights as one heatmap, or as a layers x heads grid.

    Args:
        weights: ``(Tq, Tk)``, ``(H, Tq, Tk)``, ``(L, H, Tq, Tk)``, a capture result or an ``AttentionMaps``
            (see :mod:`attnlab.viz.views` for the token convention).
        query_tokens: labels of the ``Tq`` rows (fewer tokens than rows crop padding).
        key_tokens: labels of the ``Tk`` columns.
        path: where to save; the suffix picks the format (``.png``, ``.svg``, ``.pdf``). ``None``: do not save.
        kind: which attention of a multi-kind input (``"encoder"``, ``"decoder"``, ``"cross"``); by default
            cross-attention when there is one.
        layer: one layer (negative counts from the end), or ``None`` for all.
        head: one head, ``"mean"`` for the average over heads, or ``None`` for all.
        batch: the batch row to draw for batched inputs.
        title: figure title; by default the attention kind, layer and head.
        max_labels: the most tick labels per axis of a single heatmap before labels are thinned.
        dpi: resolution of PNG output; the figure is at most :data:`MAX_PIXELS` (4,000) pixels per side at this
            resolution (``MAX_PIXELS / dpi`` inches, also for SVG and PDF).

    Long sequences: a figure that would pass :data:`MAX_PIXELS` gets smaller cells instead (a 2,000-token heatmap
    is 4,000 pixels wide at ``dpi=150``, each token under 2 pixels, drawn antialiased so that no row is dropped),
    and its labels are thinned to those that fit (at most one per 1.25 font sizes, and ``max_labels``): every
    k-th token, each written with its position (``"#1200 ␣house"``) since cells that small cannot be counted.

    Returns:
        the matplotlib ``Figure`` (one panel when a single layer and head remain, else ``L x H`` panels).
    """
    from matplotlib import rc_context

    if path is not None and Path(path).suffix.lower() not in FORMATS:
        raise ConfigError(f"cannot save a figure as {Path(path).name!r}: use a .png, .svg or .pdf file name")
    view = select(pick_view(as_views(weights, query_tokens=query_tokens, key_tokens=key_tokens, batch=batch),
                            kind), layer, head)
    with rc_context({"font.family": fonts.families(), "svg.fonttype": "path", "pdf.fonttype": 3}):
        if view.num_layers * view.num_heads == 1:
            fig = _single(view, title, cmap, max_labels, dpi)
        else:
            fig = _grid(view, title, cmap, max(8, max_labels // 3), dpi)
        if path is not None:
            save_figure(fig, path, dpi=dpi)
    return fig


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 150) -> Path:
    """Save as PNG, SVG or PDF (by suffix), creating the parent folder."""
    p = Path(path)
    if p.suffix.lower() not in FORMATS:
        raise ConfigError(f"cannot save a figure as {p.name!r}: use a .png, .svg or .pdf file name")
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=dpi, format=p.suffix.lower()[1:], metadata=_metadata(p.suffix.lower()))
    return p


def _metadata(suffix: str) -> dict[str, Any]:
    # No creation date, so the same figure gives the same file (reproducible artifacts).
    return {".png": {"Software": "attnlab"}, ".svg": {"Date": None}, ".pdf": {"CreationDate": None}}[suffix]


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _ticks(ax: Axes, axis: str, tokens: list[str], max_labels: int, fontsize: float,
           capped_at: float | None = None) -> None:
    """Label every ``step``-th position so that at most ``max_labels`` labels are written. In a figure at its size
    cap, ``capped_at`` is the axis' length in inches: then also no more labels than fit, and thinned labels carry
    their position (``"#40 ␣house"``), since cells that small cannot be counted."""
    if capped_at is not None:
        max_labels = min(max_labels, _labels_that_fit(capped_at, fontsize))
    step = max(1, math.ceil(len(tokens) / max(1, max_labels)))
    positions = list(range(0, len(tokens), step))
    shown = [display_token(tokens[i]) for i in positions]
    numbered = capped_at is not None and step > 1
    if numbered:
        shown = [f"#{i} {tok}" for i, tok in zip(positions, shown, strict=True)]
    text = fonts.labels(shown, max_chars=24 + (len(str(positions[-1])) + 2 if numbered else 0))
    if axis == "x":
        rotation = 0 if max((len(t) for t in text), default=0) <= 2 else 90  # short labels read best upright
        ax.set_xticks(positions, text, rotation=rotation, fontsize=fontsize, parse_math=False)
    else:
        ax.set_yticks(positions, text, fontsize=fontsize, parse_math=False)


def _labels_that_fit(inches: float, fontsize: float) -> int:
    """How many tick labels of ``fontsize`` points fit along ``inches`` of axis without overlapping."""
    return max(1, int(inches * 72 / (_LABEL_PITCH * fontsize)))


def _default_title(view: AttentionView) -> str:
    parts = [view.title]
    if view.num_layers == 1:
        parts.append(view.layer_names[0])
    if view.num_heads == 1:
        parts.append(view.heads[0])
    return " \N{MIDDLE DOT} ".join(parts)


def _wrap(title: str, fig: Figure) -> str:
    """Break a long title into lines that fit the figure's width (about 10 characters per inch at 12 pt)."""
    return textwrap.fill(title, width=max(20, int(fig.get_figwidth() * 10)), break_long_words=True)


def _single(view: AttentionView, title: str | None, cmap: str, max_labels: int, dpi: int) -> Figure:
    w = view.weights[0, 0].numpy()  # (Tq, Tk)
    Tq, Tk = w.shape
    label_room = 0.09 * max(len(t) for t in fonts.labels(display_tokens(view.query_tokens + view.key_tokens))) + 0.6
    extra_w, extra_h, side = label_room + 1.6, label_room + 0.8, MAX_PIXELS / dpi
    cell = min(0.35, max(_MIN_CELL, 7.0 / max(Tq, Tk)))  # inches per token: big for short, small for long sequences
    fits = min((side - extra_w) / Tk, (side - extra_h) / Tq)  # the largest cell within the size cap
    capped = cell > fits
    if capped:
        cell = max(fits, 0.5 / dpi)  # at a very high dpi even the labels barely fit: constrained layout shrinks
    fig = _new_figure(min(side, Tk * cell + extra_w), min(side, Tq * cell + extra_h))
    ax = fig.add_subplot()
    # "nearest" would draw one weight per pixel and drop the rest when cells are under about two pixels.
    interpolation = "antialiased" if cell * dpi < 2 else "nearest"
    image = ax.imshow(w, cmap=cmap, vmin=0.0, vmax=max(float(w.max()), 1e-12), interpolation=interpolation)
    fontsize = 9 if max(Tq, Tk) <= 40 else 7
    _ticks(ax, "x", view.key_tokens, max_labels, fontsize, Tk * cell if capped else None)
    _ticks(ax, "y", view.query_tokens, max_labels, fontsize, Tq * cell if capped else None)
    ylabel, xlabel = _AXIS_NAMES.get(view.kind, ("queries", "keys"))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(_wrap(fonts.renderable(title or _default_title(view)), fig), parse_math=False)
    fig.colorbar(image, ax=ax, label="attention weight", shrink=min(1.0, max(0.4, Tq / max(Tk, 1))))
    return fig


def _grid(view: AttentionView, title: str | None, cmap: str, max_labels: int, dpi: int) -> Figure:
    L, H, Tq, Tk = view.weights.shape
    width = min(3.0, max(1.4, 0.09 * Tk))  # inches per panel; cells stay square
    height = width * min(2.0, max(0.25, Tq / Tk))
    room = 0.07 * max(len(t) for t in fonts.labels(display_tokens(view.query_tokens + view.key_tokens))) + 0.3
    fig_w, fig_h = H * width + room + 1.6, L * (height + 0.35) + room + 0.6
    shrink = min(1.0, MAX_PIXELS / dpi / fig_w, MAX_PIXELS / dpi / fig_h)  # many heads or layers: smaller panels
    fig = _new_figure(fig_w * shrink, fig_h * shrink)
    width, height = width * shrink, height * shrink
    axes = fig.subplots(L, H, squeeze=False, sharex=True, sharey=True)
    vmax = max(float(view.weights.max()), 1e-12)
    fontsize = 7 if max(Tq, Tk) <= 20 else 5
    interpolation = "antialiased" if width / Tk * dpi < 2 else "nearest"  # as in _single
    image = None
    for i in range(L):
        for j in range(H):
            ax = axes[i][j]
            image = ax.imshow(view.weights[i, j].numpy(), cmap=cmap, vmin=0.0, vmax=vmax, interpolation=interpolation)
            name = _short_layer_name(view.layer_names[i], i)
            ax.set_title(fonts.renderable(f"{name} \N{MIDDLE DOT} {view.heads[j]}"), fontsize=7,
                         parse_math=False)
            ax.tick_params(length=0)
            if i == L - 1:
                _ticks(ax, "x", view.key_tokens, max_labels, fontsize, width if shrink < 1 else None)
            if j == 0:
                _ticks(ax, "y", view.query_tokens, max_labels, fontsize, height if shrink < 1 else None)
    fig.suptitle(_wrap(fonts.renderable(title or _default_title(view)), fig), parse_math=False)
    fig.colorbar(image, ax=axes, label="attention weight", shrink=0.6)
    return fig
