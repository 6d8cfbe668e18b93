"""A self-contained interactive attention viewer: one HTML file, no network, works when opened from disk.

The page is an instrument for one or many examples (sentences), each with the kinds of attention it has (encoder
self, decoder self, cross):

* the **head view**: query and key tokens in two columns, a line between them whose opacity is the weight, every
  head of a layer overlaid in its own colour (Okabe & Ito's colour-blind-safe palette) with a toggle per head;
  hovering, clicking or moving to a token with the arrow keys isolates its lines;
* the **model view**: a thumbnail of every layer x head on one shared colour scale; a click opens that head;
* the **matrix**: the selected head (or the mean of the heads shown) sized to the page, with a colour bar, thinned
  labels and the value in each cell when cells are large enough;
* the **text view**: both token sequences in reading order, shaded by the weight of the token under the pointer;
* beside them, summaries from :mod:`attnlab.viz.analysis`: entropy per head (sortable), attention rollout for
  encoders, the argmax alignment for cross-attention; and, with several examples, the list of examples.

Colours come from viridis (perceptually uniform, computed in the script from a table of ten colours), linear or
square-root, shared by all layers and heads of one kind of attention of one example.

Weights travel compactly (see :func:`encode_weights`): base64 float16, or 8 bits per weight with an offset and a
step per head for large pages; the script decodes them. Size limits: see ``_FLOAT16_LIMIT`` and ``_LARGE``.

Tokens are shown by :func:`attnlab.viz.labels.display_token` (SentencePiece's ``"▁"`` as ``"␣"``), as in the figures.

Safety: tokens are data, never markup. They travel in a ``<script type="application/json">`` block with
``<``, ``>`` and ``&`` escaped as ``\\u003c``, ``\\u003e``, ``\\u0026``, and the script puts them on the page
with ``textContent`` (or draws them on a canvas) only: no ``innerHTML``, no ``eval``. A Content-Security-Policy
allows no network access and only the page's own script and style (by hash), so even an injected element could
neither run nor load.

The interface is in English or simplified Chinese (``lang="zh"``); its strings come from :mod:`attnlab.viz.i18n`,
filled into the template or carried in the JSON data, so they change neither the script nor its hash. In Jupyter,
:mod:`attnlab.viz.notebook` shows the same page inline.

Dimension legend: ``L`` layers, ``H`` heads, ``Tq``/``Tk`` query/key length.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch

from attnlab.core.errors import ConfigError
from attnlab.viz import i18n
from attnlab.viz.labels import display_tokens
from attnlab.viz.views import AttentionView, Example, as_examples

log = logging.getLogger(__name__)

Precision = Literal["auto", "float16", "uint8"]

_FLOAT16_LIMIT = 2_000_000  # weights in a page; past this "auto" stores 8 bits a weight (float16: ~5.3 MB of base64)
_LARGE = 20_000_000  # weights; past this (~27 MB at 8 bits) the page is slow to load, so say so
_FLOAT16_MAX = 65504.0  # the largest finite half-precision number
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}

PAGE_HEAD = """<!DOCTYPE html>
<html lang="{{LANG}}">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{CSP}}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="attnlab {{VERSION}}">
<title>{{TITLE}}</title>
<style>{{CSS}}</style>
</head>
<body>
"""
"""The start of every self-contained page attnlab writes (up to ``<body>``): ``{{LANG}}``, ``{{CSP}}``,
``{{VERSION}}``, ``{{TITLE}}`` (escaped by the caller) and ``{{CSS}}`` are filled in by :func:`fill_page`."""

_PLACEHOLDER = re.compile(r"\{\{([A-Z]+|[a-z][A-Za-z]*)\}\}")


def _asset(name: str) -> str:
    return resources.files("attnlab.viz").joinpath("assets", name).read_text(encoding="utf-8")


def json_for_script(obj: Any) -> str:
    """JSON that is inert inside a ``<script>`` element: ``<``, ``>``, ``&``, U+2028/9 as ``\\u`` escapes."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return re.sub("[<>&\u2028\u2029]", lambda m: _JSON_ESCAPES[m.group(0)], text)


def fill_page(template: str, fields: dict[str, str], ui: dict[str, str]) -> str:
    """Fill a page template in one pass: inserted text is never scanned for placeholders again.

    ``{{UPPER}}`` placeholders take ``fields`` as given (the caller escapes them); ``{{camelCase}}`` ones take
    the interface string of that name from ``ui`` (see :mod:`attnlab.viz.i18n`), HTML-escaped.
    """
    def value(m: re.Match[str]) -> str:
        key = m.group(1)
        return fields[key] if key.isupper() else html.escape(ui[key])

    return _PLACEHOLDER.sub(value, template)


def _csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode("utf-8")).digest()).decode("ascii") + "'"


# ------------------------------------------------------------------------------------------- compact weights
def encode_weights(weights: torch.Tensor, precision: Literal["float16", "uint8"]) -> dict[str, Any]:
    """Weights ``(L, H, Tq, Tk)`` as the page carries them: base64 bytes, row-major, with what decodes them.

    * ``"float16"``: IEEE half precision, little-endian, 2 bytes a weight. Error: ``|w' - w| <= 2**-11 * |w|``
      where ``|w| >= 2**-14``, at most ``2**-25`` below (half precision is subnormal there); for weights in
      ``[0, 1]`` at most ``2**-12``, about 0.00024.
    * ``"uint8"``: 1 byte a weight, per head ``w' = offset + step * q`` with ``q`` in 0..255, ``offset`` the
      head's smallest weight and ``step`` its range / 255. Error: ``|w' - w| <= step / 2`` (0.002 for a head
      whose weights span ``[0, 1]``).

    :func:`decode_weights` is the inverse (as ``viewer.js`` decodes it).
    """
    w = weights.detach().to("cpu", torch.float32)
    if w.dim() != 4:
        raise ConfigError(f"encode_weights expects (L, H, Tq, Tk), got shape {tuple(w.shape)}")
    shape = list(w.shape)
    if precision == "float16":
        if w.numel() and float(w.abs().max()) > _FLOAT16_MAX:
            raise ConfigError(f"weights up to {float(w.abs().max()):.3g} do not fit float16 (at most 65504); "
                              "use precision='uint8'")
        raw = w.numpy().astype("<f2").tobytes()
        return {"dtype": "float16", "shape": shape, "data": base64.b64encode(raw).decode("ascii")}
    if precision != "uint8":
        raise ConfigError(f"precision must be 'float16' or 'uint8', got {precision!r:.40}")
    flat = w.numpy().astype(np.float64).reshape(shape[0] * shape[1], -1)  # (L*H, Tq*Tk)
    lo, hi = flat.min(1), flat.max(1)
    step = (hi - lo) / 255
    q = np.rint((flat - lo[:, None]) / np.maximum(step, 1e-300)[:, None]).clip(0, 255)  # a constant head: all 0
    raw = q.astype(np.uint8).tobytes()
    return {"dtype": "uint8", "shape": shape, "data": base64.b64encode(raw).decode("ascii"),
            "offset": lo.tolist(), "step": step.tolist()}


def decode_weights(encoded: dict[str, Any]) -> torch.Tensor:
    """The ``(L, H, Tq, Tk)`` float32 weights of :func:`encode_weights`' output (what the page's script reads)."""
    shape = [int(n) for n in encoded["shape"]]
    raw = base64.b64decode(encoded["data"], validate=True)
    if encoded["dtype"] == "float16":
        return torch.from_numpy(np.frombuffer(raw, dtype="<f2").astype(np.float32).reshape(shape))
    q = np.frombuffer(raw, dtype=np.uint8).astype(np.float64).reshape(shape[0] * shape[1], -1)
    w = np.asarray(encoded["offset"])[:, None] + np.asarray(encoded["step"])[:, None] * q
    return torch.from_numpy(w.astype(np.float32).reshape(shape))


# ------------------------------------------------------------------------------------------------- payload
def _rollout(view: AttentionView, w: torch.Tensor) -> torch.Tensor | None:
    """Attention rollout ``(T, T)`` of an encoder's self-attention; ``None`` for other kinds of attention."""
    from attnlab.viz.analysis import attention_rollout

    # A plain tensor ("attention") with one token sequence on both axes is taken as self-attention; negative
    # numbers are not attention weights, and rollout would mean nothing.
    if view.kind not in ("encoder", "self", "attention") or view.query_tokens != view.key_tokens or w.min() < 0:
        return None
    return attention_rollout(w)


def _view_data(view: AttentionView, example: int, precision: Literal["float16", "uint8"],
               lang: str) -> dict[str, Any]:
    from attnlab.viz.analysis import argmax_alignment, attention_entropy

    w = torch.nan_to_num(view.weights, nan=0.0, posinf=0.0, neginf=0.0)  # (L, H, Tq, Tk)
    rollout = _rollout(view, w)
    alignment = sorted(argmax_alignment(w), key=lambda p: p[1]) if view.kind == "cross" else None
    return {
        "kind": view.kind,
        "title": i18n.KIND_TITLES[lang].get(view.kind, view.title),
        "example": example,
        "queryTokens": display_tokens(view.query_tokens),  # as drawn: "▁house" -> "␣house"
        "keyTokens": display_tokens(view.key_tokens),
        "layerNames": [i18n.name(n, lang) for n in view.layer_names],
        "headNames": [i18n.name(n, lang) for n in view.heads],
        "weights": encode_weights(w, precision),
        "entropy": attention_entropy(w).round(decimals=4).tolist(),  # (L, H) nats
        "focus": w.amax(-1).mean(-1).round(decimals=4).tolist(),  # (L, H) mean of each query's largest weight
        "rollout": None if rollout is None else encode_weights(rollout[None, None], precision),  # (1, 1, T, T)
        "alignment": None if alignment is None else [list(p) for p in alignment],  # [source i, target j]
    }


def _pick_precision(precision: str, views: list[AttentionView]) -> Literal["float16", "uint8"]:
    if precision not in get_args(Precision):
        raise ConfigError(f"precision must be one of {', '.join(map(repr, get_args(Precision)))}, "
                          f"got {precision!r:.40}")
    if precision != "auto":
        return precision  # type: ignore[return-value]
    size = sum(v.weights.numel() for v in views)
    peak = max(float(torch.nan_to_num(v.weights, nan=0.0, posinf=0.0, neginf=0.0).abs().max()) for v in views)
    return "float16" if size <= _FLOAT16_LIMIT and peak <= _FLOAT16_MAX else "uint8"


def html_document(weights: Any, *, query_tokens: Sequence[str] | None = None,
                  key_tokens: Sequence[str] | None = None, title: str | None = None, batch: int = 0,
                  decimals: int = 3, lang: str = "en", precision: Precision = "auto") -> str:
    """The viewer page as a string; arguments as for :func:`write_html`."""
    from attnlab import __version__

    ui = i18n.strings("viewer", lang)
    if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= 6:
        raise ConfigError(f"decimals must be an integer in 0..6, got {decimals!r:.40}")
    title = ui["title"] if title is None else str(title)
    examples: list[Example] = as_examples(weights, query_tokens=query_tokens, key_tokens=key_tokens, batch=batch)
    per_example = [e.views() for e in examples]
    flat = [v for views in per_example for v in views]
    size = sum(v.weights.numel() for v in flat)
    if size > _LARGE:
        log.warning("the viewer holds %d weights; the page may load slowly (select layers, crop the sequences or "
                    "pass fewer examples)", size)
    chosen = _pick_precision(precision, flat)
    payload = {"title": title, "ui": ui, "decimals": decimals,
               "examples": [{"name": e.name, "prediction": e.prediction} for e in examples],
               "views": [_view_data(v, i, chosen, lang) for i, views in enumerate(per_example) for v in views]}
    css, js = _asset("viewer.css"), _asset("viewer.js")
    csp = (f"default-src 'none'; script-src {_csp_hash(js)}; style-src {_csp_hash(css)}; img-src data:; "
           "base-uri 'none'; form-action 'none'")
    fields = {"LANG": i18n.html_lang(lang), "CSP": csp, "VERSION": html.escape(__version__),
              "TITLE": html.escape(title), "CSS": css, "JS": js, "DATA": json_for_script(payload)}
    return fill_page(_asset("viewer.html"), fields, ui)


def write_html(weights: Any, path: str | Path, *, query_tokens: Sequence[str] | None = None,
               key_tokens: Sequence[str] | None = None, title: str | None = None, batch: int = 0,
               decimals: int = 3, lang: str = "en", precision: Precision = "auto") -> Path:
    """Write the interactive viewer for ``weights`` to ``path`` (one file, UTF-8).

    Args:
        weights: one example: ``(Tq, Tk)``, ``(H, Tq, Tk)``, ``(L, H, Tq, Tk)``, a capture result, an
            ``AttentionMaps`` or :class:`~attnlab.viz.views.AttentionView` (one or a list); or several examples:
            an :class:`~attnlab.viz.views.Example` or a list of them, each with its own tokens, name and
            prediction (the page lists them and keeps the view, layer and head when the reader switches).
        path: the ``.html`` file to write (parent folders are created).
        query_tokens: row labels; for captures and ``AttentionMaps`` the target tokens (decoder side).
        key_tokens: column labels; for captures and ``AttentionMaps`` the source tokens (encoder side).
            With self-attention only, either one labels both axes. Fewer tokens than positions crop padding.
        title: shown at the top of the page and in the browser tab; by default "attention" in ``lang``.
        batch: the batch row to show for batched inputs.
        decimals: how many decimals the page shows for a weight (0-6).
        lang: the language of the page's interface, ``"en"`` or ``"zh"`` (simplified Chinese); tokens and the
            title are shown as given. Default layer and head names ("layer 0", "head 1") are translated too.
        precision: how weights are stored (see :func:`encode_weights`): ``"float16"``, ``"uint8"`` (half the
            size, error up to half a step of each head's range / 255), or ``"auto"``: float16 up to 2 million
            weights in the page, else uint8.

    Returns:
        the path written.
    """
    page = html_document(weights, query_tokens=query_tokens, key_tokens=key_tokens, title=title, batch=batch,
                         decimals=decimals, lang=lang, precision=precision)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(page, encoding="utf-8")
    return p
