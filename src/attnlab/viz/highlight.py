"""A text classifier's attention over one text, drawn as highlighted tokens with the predicted label.

Each :class:`Highlight` is one text: its tokens, one attention weight per token (e.g. the weights an
attention-pooling classifier puts on each position), the predicted label and its probability. Two ways to
look at them:

* :func:`plot_highlight`: a static figure (matplotlib, imported lazily, Agg canvas, no pyplot state), one
  block per example: a header with the prediction, then the tokens as wrapped lines whose background colour
  is the token's weight divided by the example's largest weight, with a small colour scale giving that
  maximum. Saved as PNG, SVG or PDF. Every string is drawn literally (no mathtext) and in any script (see
  :mod:`attnlab.viz.fonts`).
* :func:`write_highlight_html`: one self-contained page (no network; CSP by hash like the attention viewer)
  listing many examples; click one or use the arrow keys, hover a token for its exact weight.

Tokens are joined with spaces, except next to a CJK character (:func:`attnlab.data.chinese.is_cjk`), so
character-level Chinese reads as written: ``我 爱 你`` is shown as ``我爱你``. Both ways show each token by
:func:`attnlab.viz.labels.display_token`: SentencePiece's space marker ``"▁"`` is drawn as ``"␣"``.

Dimension legend: ``T`` tokens of one text.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from attnlab.core.errors import ConfigError, DataError
from attnlab.data.chinese import is_cjk
from attnlab.viz import fonts, i18n
from attnlab.viz.heatmap import FORMATS, save_figure
from attnlab.viz.html import PAGE_HEAD, _asset, _csp_hash, fill_page, json_for_script
from attnlab.viz.labels import display_tokens

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

_MAX_HEADER_CHARS = 300  # labels and titles longer than this are shortened (with an ellipsis) in figures
_MARGIN = 0.3  # inches around the figure's content
_PAD = 0.025  # inches between a token's text and the edge of its box
_SCALE_WIDTH = 1.0  # inches of the colour scale beside each example's header


@dataclass(frozen=True)
class Highlight:
    """One classified text and the attention weight of each of its tokens.

    Attributes:
        tokens: the ``T`` tokens, as the model saw them (words, subwords or single Chinese characters).
        weights: ``(T,)`` attention weights, finite and ``>= 0`` (a list or a tensor; stored as a list of floats).
        label: the predicted label.
        probability: the model's probability for ``label``, in ``[0, 1]``.
        text: the original text, shown on the HTML page when given.
        true_label: the gold label, shown (with a check or a cross) when given.
        title: a heading for this example, e.g. its id in the data set.
    """

    tokens: list[str]
    weights: list[float] | torch.Tensor
    label: str
    probability: float
    text: str | None = None
    true_label: str | None = None
    title: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.tokens, str | bytes):
            raise DataError("tokens must be a list of strings, not one string")
        try:
            tokens = list(self.tokens)
        except TypeError:
            raise DataError(f"tokens must be a list of strings, got {type(self.tokens).__name__}") from None
        for i, tok in enumerate(tokens):
            if not isinstance(tok, str):
                raise DataError(f"token {i} has type {type(tok).__name__}, not str")
        if not tokens:
            raise DataError("a highlight needs at least one token")
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "weights", _check_weights(self.weights, len(tokens)))
        if not isinstance(self.label, str):
            raise DataError(f"label must be a string, got {type(self.label).__name__}")
        for name in ("text", "true_label", "title"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise DataError(f"{name} must be a string or None, got {type(getattr(self, name)).__name__}")
        if isinstance(self.probability, str | bytes | bool):
            raise DataError(f"probability must be a number in [0, 1], got {type(self.probability).__name__}")
        try:
            p = float(self.probability)
        except (TypeError, ValueError, RuntimeError):
            raise DataError(f"probability must be a number in [0, 1], got {type(self.probability).__name__}") from None
        if not 0.0 <= p <= 1.0:  # also false for NaN
            raise DataError(f"probability {p:.4g} is not in [0, 1]")
        object.__setattr__(self, "probability", p)

    @property
    def max_weight(self) -> float:
        """The largest weight: the colour scale's top for this example."""
        return max(self.weights)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """Shown in Jupyter as the highlight page (see :mod:`attnlab.viz.notebook`)."""
        from attnlab.viz.notebook import inline

        return inline(self)._repr_mimebundle_(include, exclude)


def _check_weights(weights: Any, num_tokens: int) -> list[float]:
    """``weights`` as a list of ``num_tokens`` finite, non-negative floats, or a one-line :class:`DataError`."""
    try:
        w = torch.as_tensor(weights.detach().cpu() if isinstance(weights, torch.Tensor) else weights,
                            dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise DataError(f"weights must be a list of numbers or a tensor of shape (T,), "
                        f"got {type(weights).__name__}") from None
    if w.dim() != 1:
        raise DataError(f"weights must have shape (T,), got shape {tuple(w.shape)}")
    if len(w) != num_tokens:
        raise DataError(f"{num_tokens} tokens but {len(w)} weights: give one weight per token")
    bad = (~torch.isfinite(w) | (w < 0)).nonzero().flatten()
    if len(bad):
        i = int(bad[0])
        raise DataError(f"weight {i} is {w[i].item():.4g}: weights must be finite and >= 0")
    return w.tolist()


def _as_examples(examples: Highlight | Sequence[Highlight]) -> list[Highlight]:
    items = [examples] if isinstance(examples, Highlight) else list(examples)
    if not items:
        raise ConfigError("no examples to show: pass a Highlight or a non-empty list of them")
    for i, item in enumerate(items):
        if not isinstance(item, Highlight):
            raise ConfigError(f"example {i} has type {type(item).__name__}, not Highlight")
    return items


def space_before(tokens: Sequence[str]) -> list[bool]:
    """Whether a space goes before each token: not first, and neither neighbour's touching character is CJK."""
    return [i > 0 and not (tokens[i - 1] and is_cjk(tokens[i - 1][-1])) and not (tok and is_cjk(tok[0]))
            for i, tok in enumerate(tokens)]


def _verdict(item: Highlight) -> str:
    text = f"predicted: {item.label} (p = {item.probability:.3f})"
    if item.true_label is not None:
        mark = "\N{CHECK MARK}" if item.true_label == item.label else "\N{BALLOT X}"
        text += f" \N{MIDDLE DOT} true: {item.true_label} {mark}"
    return text


# ---------------------------------------------------------------------------------------------- figure


def plot_highlight(examples: Highlight | Sequence[Highlight], path: str | Path | None = None, *,
                   cmap: str = "Blues", max_tokens: int = 400, width: float = 8.0, fontsize: float = 11.0,
                   dpi: int = 150) -> Figure:
    """Draw each example's tokens on a background coloured by attention weight, under its prediction.

    Colours are scaled per example (``weight / max weight``); a small colour scale beside each header gives
    that example's maximum. Each token's box is a ``Rectangle`` with gid ``"token-{example}-{position}"``
    (an ``id`` in SVG output), its colour scale an image with gid ``"scale-{example}"``.

    Args:
        examples: one :class:`Highlight` or a list of them, drawn top to bottom.
        path: where to save; the suffix picks the format (``.png``, ``.svg``, ``.pdf``). ``None``: do not save.
        cmap: a sequential matplotlib colour map that starts near white (``"Blues"``, ``"Greens"``, ``"Greys"``).
        max_tokens: the most tokens drawn per example; the figure says how many more were left out.
        width: figure width in inches; lines of tokens wrap to fit it.
        fontsize: token font size in points.
        dpi: resolution of PNG output.

    Returns:
        the matplotlib ``Figure``.
    """
    from matplotlib import colormaps, rc_context

    if path is not None and Path(path).suffix.lower() not in FORMATS:
        raise ConfigError(f"cannot save a figure as {Path(path).name!r:.80}: use a .png, .svg or .pdf file name")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ConfigError(f"max_tokens must be a positive integer, got {max_tokens!r:.40}")
    if not width >= 2 * _MARGIN + _SCALE_WIDTH + 1.0:
        raise ConfigError(f"width must be at least {2 * _MARGIN + _SCALE_WIDTH + 1.0:g} inches, got {width!r:.40}")
    try:
        colormap = colormaps[cmap]
    except KeyError:
        raise ConfigError(f"unknown colour map {cmap!r:.60}: try 'Blues', 'Greens' or 'Greys'") from None
    items = _as_examples(examples)
    with rc_context({"font.family": fonts.families(), "svg.fonttype": "path", "pdf.fonttype": 3}):
        fig = _Layout(width, fontsize, colormap).draw(items, max_tokens)
        if path is not None:
            save_figure(fig, path, dpi=dpi)
    return fig


class _Layout:
    """Places text top-down in a figure whose one axes spans it, in data coordinates of inches (y points down)."""

    def __init__(self, width: float, fontsize: float, colormap: Colormap) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.fig = Figure(figsize=(width, 2.0))
        FigureCanvasAgg(self.fig)
        self.ax: Axes = self.fig.add_axes((0.0, 0.0, 1.0, 1.0))
        self.ax.set_axis_off()
        self.width, self.fontsize, self.colormap = width, fontsize, colormap
        self.line = fontsize * 1.75 / 72  # inches per line of tokens
        self.y = _MARGIN  # top of the next line
        self._renderer = self.fig.canvas.get_renderer()

    def measure(self, text: str, size: float) -> float:
        """Width of ``text`` in inches (fallback fonts included), as drawn without mathtext."""
        from matplotlib.font_manager import FontProperties

        prop = FontProperties(family=fonts.families(), size=size)
        return self._renderer.get_text_width_height_descent(text, prop, ismath=False)[0] / self.fig.dpi

    def draw(self, items: list[Highlight], max_tokens: int) -> Figure:
        for e, item in enumerate(items):
            if e:
                self.y += 0.12
                self.ax.plot([_MARGIN, self.width - _MARGIN], [self.y, self.y], color="#cccccc", lw=0.6)
                self.y += 0.16
            self._example(e, item, max_tokens)
        height = self.y + _MARGIN
        self.fig.set_size_inches(self.width, height)
        self.ax.set_xlim(0.0, self.width)
        self.ax.set_ylim(height, 0.0)
        return self.fig

    def _text(self, x: float, y: float, text: str, **kwargs: Any) -> None:
        # parse_math=False: "$x^2$" is drawn as those five characters, never as mathtext.
        self.ax.text(x, y, text, va="center", ha="left", parse_math=False, **kwargs)

    def _header(self, text: str, limit: float, size: float, **kwargs: Any) -> None:
        text = fonts.renderable(_shorten(text))
        for line in _wrap(text, limit, lambda s: self.measure(s, size)):
            self._text(_MARGIN, self.y + self.line / 2, line, fontsize=size, **kwargs)
            self.y += self.line

    def _example(self, e: int, item: Highlight, max_tokens: int) -> None:
        left = self._scale(e, self.y, item.max_weight)
        limit = left - _MARGIN - 0.15  # header lines stop short of the colour scale
        if item.title is not None:
            self._header(item.title, limit, self.fontsize + 2)  # not bold: CJK fonts often have no bold face
        self._header(_verdict(item), limit, self.fontsize - 1, color="#333333")
        self.y += 0.06
        self._tokens(e, item, max_tokens)
        left_out = len(item.tokens) - max_tokens
        if left_out > 0:  # never a silent cut
            log.info("example %d: drawing %d of %d tokens (max_tokens)", e, max_tokens, len(item.tokens))
            note = f"\N{HORIZONTAL ELLIPSIS} {left_out} more tokens not shown (max_tokens={max_tokens})"
            self._text(_MARGIN, self.y + self.line / 2, note, fontsize=self.fontsize - 2, color="#b2182b",
                       style="italic")
            self.y += self.line

    def _scale(self, e: int, top: float, vmax: float) -> float:
        """A small colour bar from 0 to this example's largest weight, right-aligned; returns its left edge."""
        size = self.fontsize - 3
        x1 = self.width - _MARGIN - self.measure(f"{vmax:.3g}", size) - 0.05
        x0, y = x1 - _SCALE_WIDTH, top + self.line / 2
        gradient = torch.linspace(0.0, 1.0, 64).reshape(1, 64).numpy()
        self.ax.imshow(gradient, cmap=self.colormap, vmin=0.0, vmax=1.0, aspect="auto", interpolation="bilinear",
                       extent=(x0, x1, y + 0.05, y - 0.05), gid=f"scale-{e}")
        self._text(x1 + 0.05, y, f"{vmax:.3g}", fontsize=size, color="#333333")
        label = "weight 0"
        left = x0 - 0.05 - self.measure(label, size)
        self._text(left, y, label, fontsize=size, color="#333333")
        return left

    def _tokens(self, e: int, item: Highlight, max_tokens: int) -> None:
        from matplotlib.patches import Rectangle

        shown = fonts.labels(display_tokens(item.tokens[:max_tokens]), max_chars=40)
        spaces = space_before(item.tokens[:max_tokens])
        gap, right = self.measure(" ", self.fontsize) or 0.3 * self.fontsize / 72, self.width - _MARGIN
        vmax, x = item.max_weight, _MARGIN
        for i, (text, weight, space) in enumerate(zip(shown, item.weights, spaces, strict=False)):
            pad = _PAD / 4 if all(map(is_cjk, text)) else _PAD  # CJK characters sit close, as in print
            box = self.measure(text, self.fontsize) + 2 * pad
            x += gap if space else 0.0
            if x + box > right and x > _MARGIN:  # wrap: this token starts the next line
                x, self.y = _MARGIN, self.y + self.line
            share = weight / vmax if vmax > 0 else 0.0
            rgba = self.colormap(share)
            self.ax.add_patch(Rectangle((x, self.y + 0.1 * self.line), box, 0.8 * self.line, facecolor=rgba,
                                        edgecolor="none", gid=f"token-{e}-{i}"))
            luminance = 0.2126 * rgba[0] + 0.7152 * rgba[1] + 0.0722 * rgba[2]
            self._text(x + pad, self.y + self.line / 2, text, fontsize=self.fontsize,
                       color="white" if luminance < 0.5 else "black", gid=f"text-{e}-{i}")
            x += box
        self.y += self.line


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_HEADER_CHARS else text[:_MAX_HEADER_CHARS - 1] + "\N{HORIZONTAL ELLIPSIS}"


def _wrap(text: str, limit: float, width_of: Callable[[str], float]) -> list[str]:
    """Greedy line breaking by measured width: at the last space when there is one, else between characters."""
    lines, line = [], ""
    for ch in text:
        if not line or width_of(line + ch) <= limit:
            line += ch
            continue
        cut = line.rfind(" ")
        if ch != " " and cut > 0 and not is_cjk(ch):
            lines.append(line[:cut])
            line = line[cut + 1:] + ch
        else:
            lines.append(line.rstrip())
            line = "" if ch == " " else ch
    return [*lines, line]


# ---------------------------------------------------------------------------------------------- HTML page

_PAGE = PAGE_HEAD + """<header>
  <h1 id="title"></h1>
  <p class="help">{{help}}</p>
</header>
<main>
  <nav aria-label="{{examplesAria}}"><ol id="list"></ol></nav>
  <section id="example" aria-live="polite">
    <h2 id="ex-title"></h2>
    <p class="verdict">{{predicted}} <b id="pred-label"></b> <span id="pred-prob"></span>
      <span id="true-wrap">&middot; {{trueLabel}} <b id="true-label"></b> <span id="mark"></span></span></p>
    <div id="tokens" class="tokens"></div>
    <div class="legend"><span>{{weightZero}}</span><span id="bar" class="bar"></span><span id="vmax"></span>
      <span class="note">{{scaleNote}}</span></div>
    <table id="top"><caption>{{topCaption}}</caption>
      <thead><tr><th>#</th><th>{{colToken}}</th><th>{{colPosition}}</th><th>{{colWeight}}</th></tr></thead>
      <tbody></tbody></table>
    <div id="text-wrap"><h3>{{textHeading}}</h3><p id="text" class="text"></p></div>
  </section>
</main>
<script type="application/json" id="attnlab-highlight-data">{{DATA}}</script>
<script>{{JS}}</script>
</body>
</html>
"""


def _example_data(item: Highlight, decimals: int) -> dict[str, Any]:
    return {"tokens": display_tokens(item.tokens), "weights": [round(w, decimals) for w in item.weights],
            "spaceBefore": space_before(item.tokens), "label": item.label, "probability": item.probability,
            "trueLabel": item.true_label, "title": item.title, "text": item.text}


def highlight_html(examples: Highlight | Sequence[Highlight], *, title: str | None = None, decimals: int = 6,
                   lang: str = "en") -> str:
    """The highlight page as a string; arguments as for :func:`write_highlight_html`."""
    from attnlab import __version__

    ui = i18n.strings("highlight", lang)
    title = ui["title"] if title is None else str(title)
    items = _as_examples(examples)
    payload = {"title": title, "examples": [_example_data(item, decimals) for item in items], "ui": ui}
    css, js = _asset("highlight.css"), _asset("highlight.js")
    csp = (f"default-src 'none'; script-src {_csp_hash(js)}; style-src {_csp_hash(css)}; base-uri 'none'; "
           "form-action 'none'")
    fields = {"LANG": i18n.html_lang(lang), "CSP": csp, "VERSION": html.escape(__version__),
              "TITLE": html.escape(title), "CSS": css, "JS": js, "DATA": json_for_script(payload)}
    return fill_page(_PAGE, fields, ui)


def write_highlight_html(examples: Highlight | Sequence[Highlight], path: str | Path, *, title: str | None = None,
                         decimals: int = 6, lang: str = "en") -> Path:
    """Write one self-contained page showing many highlighted examples (UTF-8, no network access).

    The page lists the examples (title or start of the text, prediction, and a check or cross against the
    true label); the chosen one shows its tokens on a background whose colour is the token's weight (a
    colour-blind-safe single-hue blue scale, per example, with a legend), the exact weight when hovering a
    token, its five heaviest tokens in a table, and the original text when given. Tokens are put on the page
    with ``textContent`` only; see :mod:`attnlab.viz.html` for the safety rules both pages follow.

    Args:
        examples: one :class:`Highlight` or a list of them.
        path: the ``.html`` file to write (parent folders are created).
        title: shown at the top of the page and in the browser tab; by default "attention highlights" in ``lang``.
        decimals: weights are rounded to this many decimals to keep the file small.
        lang: the language of the page's interface, ``"en"`` or ``"zh"`` (simplified Chinese); tokens, labels
            and texts are shown as given.

    Returns:
        the path written.
    """
    page = highlight_html(examples, title=title, decimals=decimals, lang=lang)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(page, encoding="utf-8")
    return p
