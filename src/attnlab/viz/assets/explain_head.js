// attnlab explain-head page. Every token and number reaches the page through textContent, never as markup.
(function () {
  "use strict";
  var ACCENT = "33, 102, 172";
  var data = JSON.parse(document.getElementById("attnlab-explain-data").textContent);
  var state = { head: data.head, query: data.query, decimals: data.decimals };
  var chips = [];
  var keyChips = [];

  function byId(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }
  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }
  function shown(token) { return token === "" ? "\u2205" : token; }
  function fmt(x) { return x === null || x === undefined ? "nan" : x.toFixed(state.decimals); }
  function shape(symbols, dims) { return symbols + " = (" + dims.join(", ") + (dims.length === 1 ? ",)" : ")"); }
  function traced(name) {
    var dims = data.shapes[name];
    return dims ? name + " " + shape(data.symbols[name], dims) : "";
  }
  function head() { return data.heads[state.head]; }
  function slice() { return [state.head * data.headDim, (state.head + 1) * data.headDim]; }

  // ------------------------------------------------------------------------------------------ tables
  function table(header, rows, caption) {
    var wrap = el("div", "table-wrap");
    var t = el("table");
    if (caption) { t.appendChild(el("caption", null, caption)); }
    var thead = el("thead"), tr = el("tr");
    header.forEach(function (h) { tr.appendChild(el("th", null, h)); });
    thead.appendChild(tr);
    t.appendChild(thead);
    var body = el("tbody");
    rows.forEach(function (row) {
      var r = el("tr", row.cls || null);
      row.cells.forEach(function (cell) {
        var td = el("td", cell.cls || null, cell.text);
        if (cell.shade !== undefined) { td.style.backgroundColor = "rgba(" + ACCENT + ", " + (0.6 * cell.shade) + ")"; }
        r.appendChild(td);
      });
      body.appendChild(r);
    });
    t.appendChild(body);
    wrap.appendChild(t);
    return wrap;
  }
  function num(x, shade) { var c = { text: fmt(x), cls: "num" }; if (shade !== undefined) { c.shade = shade; } return c; }
  function label(text, cls) { return { text: text, cls: cls || "lab" }; }
  function tok(text) { return { text: shown(text), cls: "tokcell" }; }
  function indexHeader(first, count, offset) {
    var h = first.slice();
    for (var c = 0; c < count; c++) { h.push(String(c + (offset || 0))); }
    return h;
  }
  function vectorRow(name, values, cls) {
    return { cls: cls, cells: [label(name)].concat(values.map(function (x) { return num(x); })) };
  }

  // ------------------------------------------------------------------------------------------ steps
  function section(title, lines) {
    var s = el("section", "step");
    s.appendChild(el("h2", null, title));
    (lines || []).forEach(function (line) { if (line) { s.appendChild(el("p", "note", line)); } });
    byId("steps").appendChild(s);
    return s;
  }

  function stepInput() {
    var i = state.query, D = data.dModel;
    var s = section("1. Input row x" + i + " (query " + i + ": " + shown(data.queryTokens[i]) + ")", [
      "x" + i + ": " + shape("(D,)", [D]) + ", row " + i + " of " + traced("query_input"),
      data.isSelf ? "Self-attention: the same rows give the queries, keys and values."
        : "Cross-attention: keys " + traced("key_input") + " and values " + traced("value_input") +
          " come from another sequence (shown below)."]);
    var rows = data.xQuery.map(function (row, t) {
      return { cls: t === i ? "sel" : null, cells: [label(String(t)), tok(data.queryTokens[t])].concat(
        row.map(function (x) { return num(x); })) };
    });
    s.appendChild(table(indexHeader(["t", "token"], D), rows, "query inputs X (Tq, D); the chosen row is marked"));
    if (!data.isSelf) {
      [["key inputs X_k (Tk, Dk)", data.xKey], ["value inputs X_v (Tk, Dv)", data.xValue]].forEach(function (p) {
        s.appendChild(table(indexHeader(["j", "token"], p[1][0].length), p[1].map(function (row, j) {
          return { cells: [label(String(j)), tok(data.keyTokens[j])].concat(row.map(function (x) { return num(x); })) };
        }), p[0]));
      });
    }
  }

  function stepProject() {
    var h = head(), i = state.query, r = slice(), Dh = data.headDim;
    var rows = "[" + r[0] + ":" + r[1] + "]";
    var s = section("2. Projections, head " + state.head + "'s slice: rows " + r[0] + ":" + r[1] +
      " of W_q, W_k, W_v", [
      "q = x" + i + " W_q" + rows + "\u1d40" + (h.bq ? " + b_q" + rows : "") + ": " + shape("(Dh,)", [Dh]) +
        "; K = X_k W_k" + rows + "\u1d40" + (h.bk ? " + b_k" : "") + " and V = X_v W_v" + rows + "\u1d40" +
        (h.bv ? " + b_v" : "") + ": " + shape("(Tk, Dh)", [data.keyTokens.length, Dh]) + ".",
      "All heads at once: " + traced("q_proj") + " is split into " + traced("q_heads") + "; " + traced("k_heads") +
        "; " + traced("v_heads") + ".",
      "W_q" + rows + ": " + shape("(Dh, D)", [Dh, data.dModel]) + ", W_k" + rows + ": " +
        shape("(Dh, Dk)", [Dh, data.kdim]) + ", W_v" + rows + ": " + shape("(Dh, Dv)", [Dh, data.vdim]) + "."]);
    var vecs = [vectorRow("q (query " + i + ")", h.q[i], "sel")];
    [["b_q", h.bq], ["b_k", h.bk], ["b_v", h.bv]].forEach(function (p) { if (p[1]) { vecs.push(vectorRow(p[0], p[1])); } });
    s.appendChild(table(indexHeader([""], Dh), vecs, "the query's row q and the head's biases (Dh,)"));
    [["K rows k_j (Tk, Dh)", h.k], ["V rows v_j (Tk, Dh)", h.v]].forEach(function (p) {
      s.appendChild(table(indexHeader(["j", "key"], Dh), p[1].map(function (row, j) {
        return { cells: [label(String(j)), tok(data.keyTokens[j])].concat(row.map(function (x) { return num(x); })) };
      }), p[0]));
    });
  }

  function stepScores() {
    var h = head(), i = state.query, Dh = data.headDim;
    var masks = data.maskKinds.length ? data.maskKinds.join(", ") : "none";
    var s = section("3\u20136. Scores, scaling, mask, softmax", [
      "3. raw score q \u00b7 k_j for every key; 4. times 1/\u221aDh = 1/\u221a" + Dh + " = " +
        data.scale.toFixed(6) + "; 5. mask (" + masks + "): disallowed keys get the dtype's minimum; " +
        "6. softmax over keys: weights \u2265 0 that sum to 1 (exactly 0 where masked).",
      "This is row [" + data.batchIndex + ", " + state.head + ", " + i + "] of " + traced("scores") + " and of " +
        traced("weights") + "."]);
    var rows = h.scores[i].map(function (x, j) {
      var ok = h.allowed[i][j];
      return { cls: ok ? null : "masked", cells: [label(String(j)), tok(data.keyTokens[j]), num(x),
        num(h.scaled[i][j]), label(ok ? "yes" : "no", "mask"), ok ? num(h.scaled[i][j]) : label("\u2212\u221e (min)", "num"),
        num(h.weights[i][j], h.weights[i][j]), num(h.moduleWeights[i][j])] };
    });
    var sum = h.weights[i].reduce(function (a, b) { return a + b; }, 0);
    rows.push({ cls: "total", cells: [label("\u03a3"), label(""), label(""), label(""), label(""), label(""),
      num(sum), num(h.moduleWeights[i].reduce(function (a, b) { return a + b; }, 0))] });
    s.appendChild(table(["j", "key", "q\u00b7k_j", "\u00d7 1/\u221aDh", "allowed", "masked", "weight",
      "module's weight"], rows, "one row per key"));
  }

  function stepSum() {
    var h = head(), i = state.query, Dh = data.headDim;
    var s = section("7. Weighted sum of value rows: head output = \u03a3_j weight_j v_j", [
      "head output: " + shape("(Dh,)", [Dh]) + ", row [" + data.batchIndex + ", " + state.head + ", " + i +
        "] of " + traced("context") + "."]);
    var rows = h.v.map(function (row, j) {
      var w = h.weights[i][j];
      return { cls: h.allowed[i][j] ? null : "masked", cells: [label(String(j)), tok(data.keyTokens[j]),
        num(w, w)].concat(row.map(function (x) { return num(w * x); })) };
    });
    rows.push({ cls: "total", cells: [label("\u03a3"), tok("head output"), label("")].concat(
      h.context[i].map(function (x) { return num(x); })) });
    s.appendChild(table(indexHeader(["j", "key", "weight"], Dh), rows, "weight_j \u00d7 v_j, then the sum"));
  }

  function stepOutput() {
    var i = state.query, D = data.dModel, Dh = data.headDim;
    var s = section("8. Output projection: each head's columns of W_o, summed, plus the bias", [
      "head g contributes W_o[:, g\u00b7Dh:(g+1)\u00b7Dh] \u00b7 head_g, with W_o[:, \u2026] " +
        shape("(D, Dh)", [D, Dh]) + "; the heads are merged as " + traced("merged") + " and projected to " +
        traced("output") + "."]);
    var rows = data.heads.map(function (h, g) {
      return vectorRow("head " + g + (g === state.head ? " (chosen)" : ""), h.contribution[i], g === state.head ? "sel" : null);
    });
    if (data.outBias) { rows.push(vectorRow("bias b_o", data.outBias)); }
    rows.push(vectorRow("output (sum)", data.output[i], "total"));
    rows.push(vectorRow("module's forward", data.moduleOutput[i]));
    var diff = 0;
    data.output[i].forEach(function (x, c) { diff = Math.max(diff, Math.abs(x - data.moduleOutput[i][c])); });
    s.appendChild(table(indexHeader(["part"], D), rows, "the output row " + shape("(D,)", [D]) +
      " for query " + i + "; largest difference from the module's forward: " + diff.toExponential(1)));
  }

  // ------------------------------------------------------------------------------------------ page
  function render() {
    var h = head(), i = state.query;
    chips.forEach(function (chip, t) { chip.classList.toggle("selected", t === i); });
    keyChips.forEach(function (chip, j) {
      var w = h.weights[i][j];
      chip.style.backgroundColor = "rgba(" + ACCENT + ", " + (0.85 * w) + ")";
      chip.classList.toggle("dark", w > 0.55);
      chip.classList.toggle("blocked", !h.allowed[i][j]);
      chip.title = "key " + j + ": weight " + fmt(w);
    });
    byId("summary").textContent = "head " + state.head + " of " + data.numHeads + ", query " + i + " (" +
      shown(data.queryTokens[i]) + "); D = " + data.dModel + ", H = " + data.numHeads + ", Dh = " + data.headDim +
      ", Tq = " + data.queryTokens.length + ", Tk = " + data.keyTokens.length;
    clear(byId("steps"));
    stepInput();
    stepProject();
    stepScores();
    stepSum();
    stepOutput();
  }

  function setup() {
    byId("title").textContent = data.title;
    var select = byId("head");
    data.heads.forEach(function (_, g) {
      var option = el("option", null, "head " + g);
      option.value = String(g);
      select.appendChild(option);
    });
    select.value = String(state.head);
    select.addEventListener("change", function () { state.head = Number(select.value); render(); });
    var dec = byId("decimals");
    [1, 2, 3, 4, 6, 8].forEach(function (d) {
      var option = el("option", null, String(d));
      option.value = String(d);
      dec.appendChild(option);
    });
    dec.value = String(state.decimals);
    dec.addEventListener("change", function () { state.decimals = Number(dec.value); render(); });
    data.queryTokens.forEach(function (token, t) {
      var chip = el("button", "tok", shown(token));
      chip.type = "button";
      chip.title = "query " + t;
      chip.addEventListener("click", function () { state.query = t; render(); });
      byId("queries").appendChild(chip);
      chips.push(chip);
    });
    data.keyTokens.forEach(function (token) {
      var chip = el("span", "tok key", shown(token));
      byId("keys").appendChild(chip);
      keyChips.push(chip);
    });
    document.addEventListener("keydown", function (event) {
      if (event.target && event.target.tagName === "SELECT") { return; }
      var n = data.queryTokens.length;
      if (event.key === "ArrowRight") { state.query = (state.query + 1) % n; render(); chips[state.query].focus(); }
      if (event.key === "ArrowLeft") { state.query = (state.query + n - 1) % n; render(); chips[state.query].focus(); }
    });
    render();
  }

  setup();
}());
