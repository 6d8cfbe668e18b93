"""The explanation page: the faithfulness table, then every example with one row per method, side by side.

Text: each method's row shows the tokens on a background coloured by that method's importance (blue for positive,
red for negative, scaled per row to its largest ``|value|``; hover a token for the number). Images: the image,
then a small patch heatmap per method. Translations: one small matrix per method (rows: generated tokens,
columns: source tokens).

The page follows the rules of :mod:`attnlab.viz.html`: one self-contained file, tokens travel as JSON inside a
``<script type="application/json">`` block (``<``, ``>`` and ``&`` escaped) and reach the page through
``textContent`` only, and a Content-Security-Policy admits nothing but the page's own script and style (by hash)
and ``data:`` images -- no network.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attnlab.explain.report import Explanation, FaithfulnessReport
from attnlab.viz.highlight import space_before
from attnlab.viz.html import PAGE_HEAD, _csp_hash, fill_page, json_for_script

_PAGE = PAGE_HEAD + """<header><h1 id="title"></h1>
<p class="help">Rows are methods; colour = importance for the explained output (blue supports it, red speaks against
it), each row scaled to its own largest magnitude. Hover for the number.</p></header>
<main>
<section id="summary"></section>
<section id="examples"></section>
</main>
<script type="application/json" id="attnlab-explain-data">{{DATA}}</script>
<script>{{JS}}</script>
</body>
</html>
"""

_CSS = """body{font-family:system-ui,sans-serif;margin:1.2em;color:#222;background:#fff}
h1{font-size:1.3em}h2{font-size:1.05em;margin:1.4em 0 .3em}.help{color:#555;font-size:.9em;max-width:60em}
table{border-collapse:collapse;margin:.4em 0}td,th{padding:.15em .5em;border-bottom:1px solid #ddd;font-size:.9em}
th{text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
.example{border-top:2px solid #ccc;padding-top:.3em}.verdict{color:#333;font-size:.9em;margin:.2em 0 .5em}
.row{display:flex;align-items:baseline;gap:.8em;margin:.15em 0}.method{width:11em;flex:none;font-size:.85em;color:#444}
.tokens{line-height:1.9}.tok{padding:.1em .15em;border-radius:3px}.dark{color:#fff}
.maps{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}.map{font-size:.8em;color:#444}
.grid{display:inline-grid;gap:1px;background:#eee;border:1px solid #ccc;margin-top:.2em}.cell{width:12px;height:12px}
.matrix td{padding:0;width:14px;height:14px;border:none}.matrix th{font-weight:normal;font-size:.75em;padding:0 .3em}
.matrix th.col{writing-mode:vertical-rl;transform:rotate(180deg);height:5em;text-align:left}
img.pic{image-rendering:pixelated;width:112px;height:112px;border:1px solid #ccc}
"""

_JS = """// attnlab explanation page: every token and label reaches the page through textContent, never as markup.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("attnlab-explain-data").textContent);
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  function flat(v) { return Array.isArray(v[0]) ? [].concat.apply([], v) : v; }
  function scaleOf(values) {
    return flat(values).reduce(function (m, x) { return Math.max(m, Math.abs(x)); }, 0);
  }
  // Blue for positive, red for negative; t in [-1, 1] is the share of the row's largest magnitude.
  function colour(t) {
    var a = Math.min(1, Math.abs(t)), base = t >= 0 ? [33, 102, 172] : [178, 24, 43];
    var rgb = base.map(function (c) { return Math.round(255 + a * (c - 255)); });
    return "rgb(" + rgb.join(", ") + ")";
  }
  function fmt(x) { return x === null ? "n/a" : (typeof x === "number" ? x.toFixed(3) : String(x)); }
  function table(head, rows) {
    var t = el("table"), tr = el("tr");
    head.forEach(function (h) { tr.appendChild(el("th", null, h)); });
    t.appendChild(tr);
    rows.forEach(function (r) {
      var row = el("tr");
      r.forEach(function (c, i) { row.appendChild(el("td", i ? "num" : null, i ? fmt(c) : c)); });
      t.appendChild(row);
    });
    return t;
  }
  function tokenRow(ex, m) {
    var row = el("div", "row"), box = el("div", "tokens"), s = scaleOf(m.values);
    row.appendChild(el("span", "method", m.name));
    ex.tokens.forEach(function (tok, i) {
      if (ex.spaceBefore[i]) { box.appendChild(document.createTextNode(" ")); }
      var v = m.values[i], t = s > 0 ? v / s : 0, span = el("span", "tok", tok);
      span.style.backgroundColor = colour(t);
      if (Math.abs(t) > 0.6) { span.classList.add("dark"); }
      span.title = m.name + ": " + v.toPrecision(4);
      box.appendChild(span);
    });
    row.appendChild(box);
    return row;
  }
  function patchMap(ex, m) {
    var wrap = el("div", "map"), grid = el("div", "grid"), s = scaleOf(m.values);
    wrap.appendChild(el("div", null, m.name));
    grid.style.gridTemplateColumns = "repeat(" + ex.grid[1] + ", 12px)";
    m.values.forEach(function (v, i) {
      var cell = el("div", "cell");
      cell.style.backgroundColor = colour(s > 0 ? v / s : 0);
      cell.title = ex.tokens[i] + ": " + v.toPrecision(4);
      grid.appendChild(cell);
    });
    wrap.appendChild(grid);
    return wrap;
  }
  function matrix(ex, m) {
    var wrap = el("div", "map"), t = el("table", "matrix"), s = scaleOf(m.values), head = el("tr");
    wrap.appendChild(el("div", null, m.name));
    head.appendChild(el("th"));
    ex.tokens.forEach(function (tok) { head.appendChild(el("th", "col", tok)); });
    t.appendChild(head);
    m.values.forEach(function (row, r) {
      var tr = el("tr");
      tr.appendChild(el("th", null, ex.outputTokens[r]));
      row.forEach(function (v, c) {
        var td = el("td");
        td.style.backgroundColor = colour(s > 0 ? v / s : 0);
        td.title = ex.outputTokens[r] + " \\u2190 " + ex.tokens[c] + ": " + v.toPrecision(4);
        tr.appendChild(td);
      });
      t.appendChild(tr);
    });
    wrap.appendChild(t);
    return wrap;
  }
  document.title = data.title;
  document.getElementById("title").textContent = data.title;
  var summary = document.getElementById("summary");
  summary.appendChild(el("h2", null, data.summary.caption));
  summary.appendChild(table(data.summary.header, data.summary.rows));
  if (data.checks.rows.length) {
    summary.appendChild(el("h2", null, data.checks.caption));
    summary.appendChild(table(data.checks.header, data.checks.rows));
  }
  var list = document.getElementById("examples");
  data.examples.forEach(function (ex, n) {
    var sec = el("section", "example");
    sec.appendChild(el("h2", null, (n + 1) + ". " + ex.title));
    var verdict = "explained output: " + ex.prediction + " (p = " + ex.probability.toFixed(3) + ")";
    if (ex.truth !== null) { verdict += " \\u00b7 truth: " + ex.truth; }
    sec.appendChild(el("p", "verdict", verdict));
    if (ex.kind === "text") {
      ex.methods.forEach(function (m) { sec.appendChild(tokenRow(ex, m)); });
    } else {
      var maps = el("div", "maps");
      if (ex.image) {
        var img = el("img", "pic");
        img.alt = ex.title;
        img.src = ex.image;
        maps.appendChild(img);
      }
      ex.methods.forEach(function (m) { maps.appendChild(ex.kind === "image" ? patchMap(ex, m) : matrix(ex, m)); });
      sec.appendChild(maps);
    }
    list.appendChild(sec);
  });
}());
"""


def _example_data(e: Explanation, decimals: int) -> dict[str, Any]:
    ex = e.example
    kind = "text" if ex.grid is None and ex.output_tokens is None else ("image" if ex.grid else "translation")
    title = ex.text if ex.text is not None else " ".join(ex.tokens)
    item: dict[str, Any] = {
        "kind": kind, "title": title[:300], "prediction": ex.prediction, "probability": ex.probability,
        "truth": ex.truth, "tokens": ex.tokens, "spaceBefore": space_before(ex.tokens),
        "outputTokens": ex.output_tokens, "grid": list(ex.grid) if ex.grid else None, "image": None,
        "methods": [{"name": m, "values": s.double().nan_to_num(0.0).round(decimals=decimals).tolist()}
                    for m, s in e.scores.items()],
    }
    if ex.pixels is not None:
        from attnlab.viz.image import _png_base64, to_display

        item["image"] = "data:image/png;base64," + _png_base64(to_display(ex.pixels))
    return item


def _summary(report: FaithfulnessReport) -> tuple[dict[str, Any], dict[str, Any]]:
    refs = [m for m in ("integrated_gradients", "leave_one_out") if m in report.methods]
    header = ["method", "comp@1", "comp AOPC", "suff AOPC"] + [f"tau vs {r}" for r in refs]
    rows = []
    for m in [*report.methods, "random"]:
        c = report.curves.get(m)
        if c is None:
            continue
        taus = ["--" if m in (r, "random") else _num(report.tau(m, r)) for r in refs]
        rows.append([m, _num(c["comprehensiveness"][0]), _num(c["comprehensiveness_aopc"]),
                     _num(c["sufficiency_aopc"]), *taus])
    checks = [[name, _num(c["mean_abs_dp"]), f"{int(c['flips'])}/{int(c['trials'])}"]
              for name, c in report.checks.items()]
    return ({"caption": f"faithfulness over {report.n} example(s)", "header": header, "rows": rows},
            {"caption": "attention replaced", "header": ["attention", "mean |dp|", "label flips"], "rows": checks})


def _num(x: float) -> float | None:
    return None if x != x else round(float(x), 6)  # NaN -> None (JSON null)


def explanation_html(explanations: Sequence[Explanation], report: FaithfulnessReport, *,
                     title: str = "attnlab explain", decimals: int = 5) -> str:
    """The page as a string (see the module docstring)."""
    from attnlab import __version__

    summary, checks = _summary(report)
    payload = {"title": str(title), "summary": summary, "checks": checks,
               "examples": [_example_data(e, decimals) for e in explanations]}
    csp = (f"default-src 'none'; script-src {_csp_hash(_JS)}; style-src {_csp_hash(_CSS)}; img-src data:; "
           "base-uri 'none'; form-action 'none'")
    fields = {"LANG": "en", "CSP": csp, "VERSION": html.escape(__version__), "TITLE": html.escape(str(title)),
              "CSS": _CSS, "JS": _JS, "DATA": json_for_script(payload)}
    return fill_page(_PAGE, fields, {})


def write_explanation_html(explanations: Sequence[Explanation], report: FaithfulnessReport, path: str | Path, *,
                           title: str = "attnlab explain", decimals: int = 5) -> Path:
    """Write :func:`explanation_html` to ``path`` (UTF-8; parent folders are created)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(explanation_html(explanations, report, title=title, decimals=decimals), encoding="utf-8")
    return p
