"""Attention views inline in Jupyter, offline: ``show(maps)``, or a capture, view or highlight as a cell's last line.

>>> with attnlab.capture(model, src_tokens=tokens) as maps:
...     model(inputs)
>>> maps                              # the interactive viewer, in the notebook
>>> show(maps, lang="zh")             # the same, with a Chinese interface
>>> inline(highlights).html           # the page itself, as attnlab writes it to disk

:func:`inline` turns anything the pages accept into an :class:`InlineView`: the same self-contained page that
``write_html``/``write_highlight_html``/``save_html`` write, and a PNG of the same content. Jupyter displays it
through the IPython display protocol (``_repr_mimebundle_``) without importing IPython here; so do
:class:`~attnlab.viz.capture.CaptureResult`, :class:`~attnlab.viz.views.AttentionView` and
:class:`~attnlab.viz.highlight.Highlight`, which delegate to :func:`inline`. The image pages have their own
helpers, :func:`inline_vit` and :func:`inline_caption` (their inputs are an image and maps, not one object); any
other page becomes an :class:`InlineView` with :meth:`InlineView.from_page`.

What a notebook receives (one bundle per display):

* ``text/html``: ``<div id="attnlab-<uuid4 hex>">`` holding a ``<style>`` rule scoped to that id, an
  ``<iframe sandbox="allow-scripts" srcdoc="...">`` whose ``srcdoc`` is the whole page (``html.escape(page,
  quote=True)``), and the PNG as ``<img src="data:image/png;base64,...">`` in a fallback ``<div>``.
* ``image/png`` (base64) and ``text/plain``, for front ends that show no HTML (a terminal IPython, some
  converters).

Why an iframe: the page runs as its own document, so its element ids, script, styles and key handlers cannot
meet the notebook's or another bundle's, and its Content-Security-Policy (no network, script and style by hash)
holds as when the file is opened from disk. The sandbox allows scripts but not the notebook's origin: the page
cannot reach the notebook, its kernel or its cookies. Nothing is loaded from anywhere (no URL, no CDN, no
require.js, no ``<script src>``): the page inlines its script and style, the picture is a ``data:`` URI.

Why the fallback is hidden by a ``<style>`` rule: where the HTML is rendered as given (JupyterLab, Notebook,
VS Code, nbviewer, HTML exports of a notebook) the rule hides the picture and the interactive view is all the
reader sees. Where the HTML is sanitized (an untrusted notebook in JupyterLab or Notebook, GitHub's notebook
preview), the sanitizer drops ``<iframe>`` and ``<style>`` elements with their content; JupyterLab's keeps
``<div>`` and ``<img>`` with a ``data:`` source, so the reader sees the static picture instead of an empty box
(and where ``data:`` images are refused too, nothing worse than before). A ``<noscript>`` or the iframe's own
content would not do: sanitizers remove or ignore both. A renderer that kept the iframe but dropped the style
would show both, the picture under the view.

The picture is an attnlab figure (:func:`~attnlab.viz.heatmap.plot_attention` of the default kind of attention,
the mean over heads when there are more than 24 panels; :func:`~attnlab.viz.highlight.plot_highlight` of the
first 8 examples; the ViT and caption figures of :mod:`attnlab.viz.image`), drawn in English whatever ``lang``
is; ``png`` is ``None`` only when matplotlib is missing.
"""

from __future__ import annotations

import base64
import html
import io
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from attnlab.core.errors import ConfigError
from attnlab.viz import i18n

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from attnlab.viz.views import AttentionView

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MIN_HEIGHT, _MAX_HEIGHT = 240, 1000  # pixels of an iframe whose height attnlab estimates
_MAX_PANELS = 24  # heatmap panels (layers x heads) in the picture before heads are averaged
_MAX_PICTURE_EXAMPLES = 8  # highlighted texts drawn in the picture
_DPI = 100  # of the picture: small enough for a notebook file, sharp enough to read


@dataclass(frozen=True, repr=False)
class InlineView:
    """One page and a picture of it, shown inline by Jupyter (see the module docstring for the bundle).

    Attributes:
        html: the complete, self-contained page, exactly as attnlab writes it to a file.
        png: a PNG rendering of the same content, or ``None`` when matplotlib is missing.
        text: a one-line description, shown where neither HTML nor images are (``text/plain``).
        height: the height of the inline frame in CSS pixels; the page scrolls inside it when taller.
    """

    html: str
    png: bytes | None
    text: str
    height: int = 600

    def __post_init__(self) -> None:
        if not isinstance(self.html, str) or not self.html.strip():
            raise ConfigError(f"html must be the page as a non-empty string, got {type(self.html).__name__}")
        if self.png is not None and not (isinstance(self.png, bytes) and self.png.startswith(PNG_SIGNATURE)):
            raise ConfigError("png must be the bytes of a PNG file (or None)")
        if not isinstance(self.text, str):
            raise ConfigError(f"text must be a string, got {type(self.text).__name__}")
        object.__setattr__(self, "height", _check_height(self.height))

    @classmethod
    def from_page(cls, html: str, png: bytes | Figure | None = None, text: str = "attnlab page", *,
                  height: int | None = None) -> InlineView:
        """Any self-contained page (e.g. from :func:`~attnlab.viz.image.vit_attention_html`) and its picture.

        Args:
            html: the page.
            png: the PNG bytes, or a matplotlib ``Figure`` to render, or ``None`` for no picture.
            text: a one-line description for ``text/plain``.
            height: the frame's height in pixels (default 600).
        """
        if png is not None and not isinstance(png, bytes):
            png = figure_png(png)
        return cls(html, png, text, 600 if height is None else height)

    # -------------------------------------------------------------------------- IPython display protocol
    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        bundle = {"text/html": self._repr_html_(), "text/plain": self.text}
        if self.png is not None:
            bundle["image/png"] = base64.b64encode(self.png).decode("ascii")
        if include:
            bundle = {k: v for k, v in bundle.items() if k in include}
        if exclude:
            bundle = {k: v for k, v in bundle.items() if k not in exclude}
        return bundle

    def _repr_html_(self) -> str:
        """The wrapper: a fresh id per call, so that two displays of one view never share an id."""
        uid = "attnlab-" + uuid.uuid4().hex
        label = html.escape(self.text, quote=True)
        if self.png is not None:
            fallback = (f'<img src="data:image/png;base64,{base64.b64encode(self.png).decode("ascii")}" '
                        f'alt="{label}" style="max-width: 100%;">')
        else:
            fallback = f"<p>{label} (interactive only: run the notebook to see it)</p>"
        return (f'<div id="{uid}" class="attnlab-inline">'
                f"<style>#{uid} > .attnlab-fallback {{ display: none; }}</style>"
                f'<iframe sandbox="allow-scripts" title="{label}" width="100%" height="{self.height}" '
                f'style="width: 100%; height: {self.height}px; border: 1px solid #ddd; border-radius: 4px;" '
                f'srcdoc="{html.escape(self.html, quote=True)}"></iframe>'
                f'<div class="attnlab-fallback">{fallback}</div></div>')

    def _repr_png_(self) -> bytes | None:
        return self.png

    def __repr__(self) -> str:
        return f"<InlineView: {self.text}>"


def _check_height(height: Any) -> int:
    if isinstance(height, bool) or not isinstance(height, int) or height < 1:
        raise ConfigError(f"height must be a positive number of pixels, got {height!r:.40}")
    return height


def _clamp(pixels: float) -> int:
    return int(min(_MAX_HEIGHT, max(_MIN_HEIGHT, math.ceil(pixels))))


def figure_png(fig: Figure) -> bytes:
    """A matplotlib figure as PNG bytes (no date in the metadata: the same figure gives the same bytes)."""
    if not hasattr(fig, "savefig"):
        raise ConfigError(f"png must be PNG bytes or a matplotlib Figure, got {type(fig).__name__}")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": "attnlab"})
    return buffer.getvalue()


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------------ what is shown
def _is_highlights(obj: Any) -> bool:
    from attnlab.viz.highlight import Highlight

    return isinstance(obj, Highlight) or (isinstance(obj, list | tuple) and len(obj) > 0
                                          and all(isinstance(item, Highlight) for item in obj))


def _token_rows(tokens: Sequence[str], width: float = 900.0) -> int:
    """Lines of token chips in the viewer at about ``width`` pixels (chips are ~8 px a character + 20 px)."""
    return max(1, math.ceil(sum(8 * len(t) + 20 for t in tokens) / width))


def _viewer_height(views: list[AttentionView]) -> int:
    """Enough for the tallest view: header, both token rows, the legend, status and the matrix."""
    def one(v: AttentionView) -> float:
        Tq, Tk = len(v.query_tokens), len(v.key_tokens)
        cell = max(6, min(22, 640 // max(Tq, Tk)))  # as viewer.js sizes matrix cells
        labels = min(120, 7 * max(len(t) for t in v.key_tokens) + 10)
        return (150 + 70 + 38 * (_token_rows(v.query_tokens) + _token_rows(v.key_tokens)) + 30 + 40 + 40
                + labels + Tq * (cell + 1) + 40)

    return _clamp(max(one(v) for v in views))


def _viewer(obj: Any, query_tokens: Sequence[str] | None, key_tokens: Sequence[str] | None, title: str | None,
            batch: int, lang: str, height: int | None) -> InlineView:
    from attnlab.viz.html import html_document
    from attnlab.viz.views import Example, as_examples, as_views, pick_view, select

    if isinstance(obj, Example) or (isinstance(obj, list | tuple) and any(isinstance(e, Example) for e in obj)):
        examples = as_examples(obj, query_tokens=query_tokens, key_tokens=key_tokens, batch=batch)
        page = html_document(examples, title=title, lang=lang)  # every example; the PNG shows the first
        views = examples[0].views()
    else:
        views = as_views(obj, query_tokens=query_tokens, key_tokens=key_tokens, batch=batch)
        page = html_document(views, title=title, lang=lang)
    png = None
    if _has_matplotlib():
        from attnlab.viz.heatmap import plot_attention

        view = pick_view(views, None)
        head = "mean" if view.num_layers * view.num_heads > _MAX_PANELS else None
        png = figure_png(plot_attention(select(view, None, head), title=title))
    parts = [f"{v.title}, {v.num_layers} layers x {v.num_heads} heads, {len(v.query_tokens)} x "
             f"{len(v.key_tokens)} tokens" for v in views]
    name = i18n.strings("viewer", lang)["title"] if title is None else title
    text = f"attnlab attention viewer '{name}': " + "; ".join(parts)
    return InlineView(page, png, text, _viewer_height(views) if height is None else height)


def _highlight_height(items: Sequence[Any]) -> int:
    """Enough for the tallest example: header, tokens wrapped at ~700 px, legend, top-5 table, the text."""
    def one(item: Any) -> float:
        lines = max(1, math.ceil(sum(10 * len(t) + 8 for t in item.tokens) / 700))
        text = 0 if item.text is None else 40 + 20 * math.ceil(len(item.text) / 90)
        return 90 + 30 + 30 + 38 * lines + 36 + 30 + 30 + 26 * (1 + min(5, len(item.tokens))) + text + 40

    return _clamp(max(one(item) for item in items))


def _highlights(obj: Any, title: str | None, lang: str, height: int | None) -> InlineView:
    from attnlab.viz.highlight import highlight_html, plot_highlight

    items = [obj] if not isinstance(obj, list | tuple) else list(obj)
    page = highlight_html(items, title=title, lang=lang)
    png = figure_png(plot_highlight(items[:_MAX_PICTURE_EXAMPLES])) if _has_matplotlib() else None
    first = items[0]
    text = (f"attnlab highlights: {len(items)} example{'s' * (len(items) != 1)}, the first predicted "
            f"{first.label!r} (p = {first.probability:.3f})")
    return InlineView(page, png, text, _highlight_height(items) if height is None else height)


def inline(obj: Any, *, query_tokens: Sequence[str] | None = None, key_tokens: Sequence[str] | None = None,
           title: str | None = None, batch: int = 0, lang: str = "en", height: int | None = None) -> InlineView:
    """What Jupyter shows for ``obj``: the interactive page and its picture (see the module docstring).

    Args:
        obj: anything :func:`~attnlab.viz.html.html_document` accepts (``(Tq, Tk)``, ``(H, Tq, Tk)`` or
            ``(L, H, Tq, Tk)`` weights, a capture result, an ``AttentionMaps``, an
            :class:`~attnlab.viz.views.AttentionView` or a list of them): the attention viewer and a heatmap;
            a :class:`~attnlab.viz.highlight.Highlight` or a list of them: the highlight page and its figure;
            an :class:`InlineView` (e.g. from :func:`inline_vit`): itself, with ``height`` applied.
        query_tokens: row labels, as for :func:`~attnlab.viz.html.write_html` (not for highlights).
        key_tokens: column labels, as for :func:`~attnlab.viz.html.write_html` (not for highlights).
        title: the page's heading (and the picture's title for attention weights); by default the page's own.
        batch: the batch row to show for batched inputs (not for highlights).
        lang: the language of the page's interface, ``"en"`` or ``"zh"`` (simplified Chinese).
        height: the frame's height in pixels; by default estimated from the content (240 to 1000).

    Returns:
        the :class:`InlineView`; its ``html`` is exactly the page the matching ``html_document``/``highlight_html``
        call returns.
    """
    i18n.check_lang(lang)
    if height is not None:
        _check_height(height)
    if isinstance(obj, InlineView):
        return obj if height is None else replace(obj, height=height)
    if _is_highlights(obj):
        if query_tokens is not None or key_tokens is not None or batch != 0:
            raise ConfigError("query_tokens, key_tokens and batch are for attention weights; a Highlight holds "
                              "its own tokens")
        return _highlights(obj, title, lang, height)
    return _viewer(obj, query_tokens, key_tokens, title, batch, lang, height)


def _image_height(image: Any, side: float) -> int:
    """The page's image is drawn at an integer zoom up to 512 pixels (as image.js does), under the header."""
    from attnlab.viz.image import to_display

    rows, cols = to_display(image).shape[:2]
    longest = max(rows, cols)
    zoom = 512 / longest if longest >= 512 else 512 // longest
    return _clamp(140 + max(rows * zoom + 110, side) + 32)


def inline_vit(image: Any, attention: Any, *, patch_size: int, label: str | None = None,
               probabilities: Mapping[str, float] | None = None, title: str | None = None, lang: str = "en",
               height: int | None = None) -> InlineView:
    """A ViT's attention over the image it classified, inline: :func:`~attnlab.viz.image.vit_attention_html`
    and :func:`~attnlab.viz.image.plot_vit_attention` of the same inputs (arguments as for those two)."""
    from attnlab.viz.image import plot_vit_attention, vit_attention_html

    page = vit_attention_html(image, attention, patch_size=patch_size, label=label, probabilities=probabilities,
                              title=title, lang=lang)
    if label is None and probabilities:
        label = min(probabilities, key=lambda name: (-probabilities[name], name))  # as the page picks it
    probability = probabilities.get(label) if probabilities and label is not None else None
    png = None
    if _has_matplotlib():
        png = figure_png(plot_vit_attention(image, attention, patch_size=patch_size, label=label,
                                            probability=probability, title=title))
    text = "attnlab ViT attention" + ("" if label is None else f": predicted {label!r}")
    side = 60 + 24 * (1 + min(11, len(probabilities or {})))
    return InlineView(page, png, text, _image_height(image, side) if height is None else _check_height(height))


def inline_caption(image: Any, words: Sequence[str], maps: Any, *, patch_size: int,
                   boxes: Sequence[tuple[int, int, int, int] | None] | None = None, title: str | None = None,
                   lang: str = "en", height: int | None = None) -> InlineView:
    """A caption's attention, word by word, inline: :func:`~attnlab.viz.image.caption_attention_html` and
    :func:`~attnlab.viz.image.plot_caption_attention` of the same inputs (arguments as for those two)."""
    from attnlab.viz.image import caption_attention_html, plot_caption_attention

    page = caption_attention_html(image, words, maps, patch_size=patch_size, boxes=boxes, title=title, lang=lang)
    png = None
    if _has_matplotlib():
        png = figure_png(plot_caption_attention(image, words, maps, patch_size=patch_size, boxes=boxes,
                                                title=title))
    text = f"attnlab caption attention: {' '.join(words)!r}"
    return InlineView(page, png, text, _image_height(image, 80) if height is None else _check_height(height))


def show(obj: Any, *, query_tokens: Sequence[str] | None = None, key_tokens: Sequence[str] | None = None,
         title: str | None = None, batch: int = 0, lang: str = "en", height: int | None = None) -> None:
    """Display :func:`inline` of ``obj`` in the running notebook (arguments as for :func:`inline`).

    Raises:
        ConfigError: IPython is not installed (outside a notebook, use :func:`inline` or ``write_html``).
    """
    try:
        from IPython.display import display
    except ImportError:
        raise ConfigError("show() needs IPython (pip install ipython, or run it in Jupyter); outside a notebook "
                          "use inline(...).html or write_html(...)") from None
    display(inline(obj, query_tokens=query_tokens, key_tokens=key_tokens, title=title, batch=batch, lang=lang,
                   height=height))
