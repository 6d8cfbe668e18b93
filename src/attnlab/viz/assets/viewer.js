// attnlab attention viewer. Every token reaches the page through textContent or a DOM property, never as markup.
(function () {
  "use strict";
  var ACCENT = "33, 102, 172";
  var data = JSON.parse(document.getElementById("attnlab-data").textContent);
  var state = { view: 0, layer: 0, head: "all", pinned: null, hover: null };
  var nodes = { q: [], k: [], cells: [], rows: [], cols: [] };

  function byId(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }
  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }
  function view() { return data.views[state.view]; }
  // An interface string in the page's language, its {0}, {1}... replaced by the arguments (in one pass).
  function tr(key) {
    var args = Array.prototype.slice.call(arguments, 1);
    return data.ui[key].replace(/\{(\d+)\}/g, function (_, i) { return String(args[Number(i)]); });
  }
  function shown(token) { return token === "" ? "\u2205" : token; }
  function headHue(h, count) { return Math.round((360 * h) / Math.max(count, 1)); }

  // (Tq, Tk) weights of the selected head, or the mean over heads when all heads are shown.
  function matrix() {
    var v = view(), layer = v.weights[state.layer];
    if (state.head !== "all") { return layer[state.head]; }
    return layer[0].map(function (row, i) {
      return row.map(function (_, j) {
        var sum = 0;
        for (var h = 0; h < layer.length; h++) { sum += layer[h][i][j]; }
        return sum / layer.length;
      });
    });
  }

  function fillSelect(select, labels, value) {
    clear(select);
    labels.forEach(function (pair) {
      var option = el("option", null, pair[1]);
      option.value = String(pair[0]);
      select.appendChild(option);
    });
    select.value = String(value);
  }

  function buildControls() {
    var v = view();
    fillSelect(byId("view"), data.views.map(function (w, i) { return [i, w.title]; }), state.view);
    fillSelect(byId("layer"), v.layerNames.map(function (name, i) { return [i, name]; }), state.layer);
    var heads = v.headNames.map(function (name, i) { return [i, name]; });
    if (heads.length > 1) { heads.unshift(["all", tr("allHeads")]); }
    fillSelect(byId("head"), heads, state.head);
  }

  function tokenRow(container, tokens, side) {
    clear(container);
    var chips = tokens.map(function (token, index) {
      var chip = el("button", "tok", shown(token));
      chip.type = "button";
      chip.dataset.side = side;
      chip.dataset.index = String(index);
      chip.title = tr(side === "q" ? "queryN" : "keyN", index);
      if (state.head === "all" && view().headNames.length > 1) {
        var stripes = el("span", "stripes");
        view().headNames.forEach(function () { stripes.appendChild(el("span")); });
        chip.appendChild(stripes);
      }
      container.appendChild(chip);
      return chip;
    });
    return chips;
  }

  function buildLegend() {
    var legend = byId("legend"), v = view();
    clear(legend);
    if (state.head !== "all" || v.headNames.length < 2) { return; }
    v.headNames.forEach(function (name, h) {
      var item = el("span"), swatch = el("span", "swatch");
      swatch.style.backgroundColor = "hsl(" + headHue(h, v.headNames.length) + ", 70%, 45%)";
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(name));
      legend.appendChild(item);
    });
  }

  function buildMatrix() {
    var v = view(), m = matrix(), box = byId("matrix");
    var Tq = v.queryTokens.length, Tk = v.keyTokens.length;
    clear(box);
    var cell = Math.max(6, Math.min(22, Math.floor(640 / Math.max(Tq, Tk))));
    box.style.setProperty("--cell", cell + "px");
    box.style.gridTemplateColumns = "auto repeat(" + Tk + ", var(--cell))";
    var max = 0;
    m.forEach(function (row) { row.forEach(function (w) { if (w > max) { max = w; } }); });
    max = max || 1;
    box.appendChild(el("div"));
    nodes.cols = v.keyTokens.map(function (token, j) {
      var label = el("div", "collab", shown(token));
      label.dataset.side = "k";
      label.dataset.index = String(j);
      box.appendChild(label);
      return label;
    });
    nodes.rows = [];
    nodes.cells = v.queryTokens.map(function (token, i) {
      var label = el("div", "rowlab", shown(token));
      label.dataset.side = "q";
      label.dataset.index = String(i);
      box.appendChild(label);
      nodes.rows.push(label);
      return m[i].map(function (w, j) {
        var c = el("div", "cell");
        c.dataset.q = String(i);
        c.dataset.k = String(j);
        c.dataset.w = w.toFixed(4);
        c.style.backgroundColor = "rgba(" + ACCENT + ", " + (w / max).toFixed(3) + ")";
        c.title = shown(token) + " \u2192 " + shown(v.keyTokens[j]) + ": " + w.toFixed(3);
        box.appendChild(c);
        return c;
      });
    });
    var headText = state.head === "all" ? tr("meanHeads") : v.headNames[state.head];
    byId("matrix-title").textContent = tr("matrixTitle", v.layerNames[state.layer], headText);
  }

  function render() {
    var v = view();
    byId("title").textContent = data.title;
    byId("q-label").textContent = tr(v.kind === "cross" ? "queriesTarget" : "queries");
    byId("k-label").textContent = tr(v.kind === "cross" ? "keysSource" : "keys");
    buildControls();
    nodes.q = tokenRow(byId("queries"), v.queryTokens, "q");
    nodes.k = tokenRow(byId("keys"), v.keyTokens, "k");
    buildLegend();
    buildMatrix();
    highlight();
  }

  function reset() {
    nodes.q.concat(nodes.k).forEach(function (chip) {
      chip.classList.remove("selected", "top");
      delete chip.dataset.weight;
      chip.style.backgroundColor = "";
      chip.style.color = "";
      var stripes = chip.querySelector(".stripes");
      if (stripes) { Array.prototype.forEach.call(stripes.children, function (s) { s.style.backgroundColor = ""; }); }
    });
    var lit = byId("matrix").querySelectorAll(".hl");
    Array.prototype.forEach.call(lit, function (node) { node.classList.remove("hl"); });
  }

  function highlight() {
    reset();
    var sel = state.hover || state.pinned, v = view();
    var status = byId("status");
    if (!sel) {
      status.textContent = tr("idle", v.title);
      return;
    }
    var m = matrix(), fromQuery = sel.side === "q";
    var own = fromQuery ? nodes.q : nodes.k, other = fromQuery ? nodes.k : nodes.q;
    var weights = other.map(function (_, t) { return fromQuery ? m[sel.index][t] : m[t][sel.index]; });
    var max = 0, best = 0;
    weights.forEach(function (w, t) { if (w > max) { max = w; best = t; } });
    own[sel.index].classList.add("selected");
    var layer = v.weights[state.layer], overlay = state.head === "all" && layer.length > 1;
    // Per-head weights for the stripes, scaled so that the strongest (head, token) pair is fully opaque.
    var perHead = layer.map(function (w) {
      return other.map(function (_, t) { return fromQuery ? w[sel.index][t] : w[t][sel.index]; });
    });
    var headMax = 0;
    perHead.forEach(function (row) { row.forEach(function (w) { if (w > headMax) { headMax = w; } }); });
    other.forEach(function (chip, t) {
      var w = weights[t], share = max > 0 ? w / max : 0;
      chip.dataset.weight = w.toFixed(4);
      chip.style.backgroundColor = "rgba(" + ACCENT + ", " + (0.85 * share).toFixed(3) + ")";
      chip.style.color = share > 0.6 ? "#fff" : "";
      if (overlay) {
        var stripes = chip.querySelector(".stripes").children;
        for (var h = 0; h < layer.length; h++) {
          var alpha = headMax > 0 ? perHead[h][t] / headMax : 0;
          var hue = headHue(h, layer.length);
          stripes[h].style.backgroundColor = "hsla(" + hue + ", 75%, 45%, " + alpha.toFixed(3) + ")";
          stripes[h].title = v.headNames[h] + ": " + perHead[h][t].toFixed(3);
        }
      }
    });
    if (max > 0) { other[best].classList.add("top"); }
    if (fromQuery) {
      nodes.rows[sel.index].classList.add("hl");
      nodes.cells[sel.index].forEach(function (c) { c.classList.add("hl"); });
    } else {
      nodes.cols[sel.index].classList.add("hl");
      nodes.cells.forEach(function (row) { row[sel.index].classList.add("hl"); });
    }
    var tokens = fromQuery ? v.queryTokens : v.keyTokens, others = fromQuery ? v.keyTokens : v.queryTokens;
    status.textContent = tr(fromQuery ? "queryMost" : "keyMost", shown(tokens[sel.index]), shown(others[best]),
      max.toFixed(3)) + (state.pinned ? tr("pinned") : "");
  }

  function target(event) {
    var node = event.target;
    while (node && node !== document.body) {
      if (node.dataset && node.dataset.side) {
        return { side: node.dataset.side, index: Number(node.dataset.index) };
      }
      node = node.parentNode;
    }
    return null;
  }

  function same(a, b) { return a && b && a.side === b.side && a.index === b.index; }

  ["queries", "keys", "matrix"].forEach(function (id) {
    var box = byId(id);
    box.addEventListener("mouseover", function (event) {
      var sel = target(event);
      if (sel && !same(sel, state.hover)) { state.hover = sel; highlight(); }
    });
    box.addEventListener("mouseleave", function () { state.hover = null; highlight(); });
    box.addEventListener("focusin", function (event) { state.hover = target(event); highlight(); });
    box.addEventListener("click", function (event) {
      var sel = target(event);
      if (!sel) { return; }
      state.pinned = same(sel, state.pinned) ? null : sel;
      highlight();
    });
  });
  byId("matrix").addEventListener("mousemove", function (event) {
    var c = event.target;
    if (c.classList && c.classList.contains("cell")) {
      var v = view(), i = Number(c.dataset.q), j = Number(c.dataset.k);
      byId("status").textContent = tr("cell", shown(v.queryTokens[i]), shown(v.keyTokens[j]),
        Number(c.dataset.w).toFixed(3));
    }
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape") { state.pinned = null; state.hover = null; highlight(); }
  });
  byId("view").addEventListener("change", function (event) {
    state.view = Number(event.target.value);
    state.layer = 0;
    state.head = view().headNames.length > 1 ? "all" : 0;
    state.pinned = state.hover = null;
    render();
  });
  byId("layer").addEventListener("change", function (event) { state.layer = Number(event.target.value); render(); });
  byId("head").addEventListener("change", function (event) {
    state.head = event.target.value === "all" ? "all" : Number(event.target.value);
    render();
  });

  state.head = view().headNames.length > 1 ? "all" : 0;
  render();
  document.documentElement.dataset.ready = "1";
}());
