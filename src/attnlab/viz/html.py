"""A self-contained interactive attention viewer: one HTML file, no network, works when opened from disk.

The page shows each kind of attention present (encoder self, decoder self, cross), lets the reader pick a
layer and a head (or all heads overlaid), highlights what a hovered or clicked token attends to and what
attends to it, and draws the matrix of the selected head.

Safety: tokens are data, never markup. They travel in a ``<script type="application/json">`` block with
``<``, ``>`` and ``&`` escaped as ``\\u003c``, ``\\u003e``, ``\\u0026``, and the script puts them on the page
with ``textContent`` only (no ``innerHTML``, no ``eval``). A Content-Security-Policy allows no network access
and only the page's own script and style (by hash), so even an injected element could neither run nor load.

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
from typing import Any

import torch

from attnlab.viz import i18n
from attnlab.viz.views import AttentionView, as_views

log = logging.getLogger(__name__)

_LARGE = 2_000_000  # weights; past this the page gets slow to load, so say so
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


def _view_data(view: AttentionView, decimals: int, lang: str) -> dict[str, Any]:
    w = torch.nan_to_num(view.weights, nan=0.0, posinf=0.0, neginf=0.0)
    return {
        "kind": view.kind,
        "title": i18n.KIND_TITLES[lang].get(view.kind, view.title),
        "queryTokens": view.query_tokens,
        "keyTokens": view.key_tokens,
        "layerNames": [i18n.name(n, lang) for n in view.layer_names],
        "headNames": [i18n.name(n, lang) for n in view.heads],
        "weights": w.to(torch.float64).round(decimals=decimals).tolist(),  # (L, H, Tq, Tk) nested lists
    }


def html_document(weights: Any, *, query_tokens: Sequence[str] | None = None,
                  key_tokens: Sequence[str] | None = None, title: str | None = None, batch: int = 0,
                  decimals: int = 4, lang: str = "en") -> str:
    """The viewer page as a string; arguments as for :func:`write_html`."""
    from attnlab import __version__

    ui = i18n.strings("viewer", lang)
    title = ui["title"] if title is None else str(title)
    views = as_views(weights, query_tokens=query_tokens, key_tokens=key_tokens, batch=batch)
    size = sum(v.weights.numel() for v in views)
    if size > _LARGE:
        log.warning("the viewer holds %d weights; the page may load slowly (select layers or crop the sequence)",
                    size)
    payload = {"title": title, "views": [_view_data(v, decimals, lang) for v in views], "ui": ui}
    css, js = _asset("viewer.css"), _asset("viewer.js")
    csp = (f"default-src 'none'; script-src {_csp_hash(js)}; style-src {_csp_hash(css)}; img-src data:; "
           "base-uri 'none'; form-action 'none'")
    fields = {"LANG": i18n.html_lang(lang), "CSP": csp, "VERSION": html.escape(__version__),
              "TITLE": html.escape(title), "CSS": css, "JS": js, "DATA": json_for_script(payload)}
    return fill_page(_asset("viewer.html"), fields, ui)


def write_html(weights: Any, path: str | Path, *, query_tokens: Sequence[str] | None = None,
               key_tokens: Sequence[str] | None = None, title: str | None = None, batch: int = 0,
               decimals: int = 4, lang: str = "en") -> Path:
    """Write the interactive viewer for ``weights`` to ``path`` (one file, UTF-8).

    Args:
        weights: ``(Tq, Tk)``, ``(H, Tq, Tk)``, ``(L, H, Tq, Tk)``, a capture result, an ``AttentionMaps`` or
            :class:`~attnlab.viz.views.AttentionView` (one or a list).
        path: the ``.html`` file to write (parent folders are created).
        query_tokens: row labels; for captures and ``AttentionMaps`` the target tokens (decoder side).
        key_tokens: column labels; for captures and ``AttentionMaps`` the source tokens (encoder side).
            With self-attention only, either one labels both axes. Fewer tokens than positions crop padding.
        title: shown at the top of the page and in the browser tab; by default "attention" in ``lang``.
        batch: the batch row to show for batched inputs.
        decimals: weights are rounded to this many decimals to keep the file small.
        lang: the language of the page's interface, ``"en"`` or ``"zh"`` (simplified Chinese); tokens and the
            title are shown as given. Default layer and head names ("layer 0", "head 1") are translated too.

    Returns:
        the path written.
    """
    page = html_document(weights, query_tokens=query_tokens, key_tokens=key_tokens, title=title, batch=batch,
                         decimals=decimals, lang=lang)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(page, encoding="utf-8")
    return p
