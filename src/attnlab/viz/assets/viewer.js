// attnlab attention viewer: head view, model view, matrix and text view of one or many examples.
// Every token reaches the page through textContent or a DOM property, or is drawn on a canvas; never as markup.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("attnlab-data").textContent);
  // Okabe & Ito's colour-blind-safe qualitative palette, one colour a head; it repeats after eight heads.
  var HEAD_COLOURS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"];
  // viridis (perceptually uniform) at 17 evenly spaced points; linear in between is within 6/255 of the original.
  var VIRIDIS = [[68, 1, 84], [72, 24, 106], [71, 45, 123], [66, 64, 134], [59, 82, 139], [51, 99, 141],
    [44, 114, 142], [38, 130, 142], [33, 145, 140], [31, 160, 136], [40, 174, 128], [63, 188, 115], [94, 201, 98],
    [132, 212, 75], [173, 220, 48], [216, 226, 25], [253, 231, 37]];
  var FONT = "system-ui, \"Noto Sans\", \"Noto Sans CJK SC\", sans-serif";
  var MIN_ALPHA = 1 / 64;  // fainter lines are not drawn
  var MAX_LINES = 6000;    // with no token selected, the head view draws at most about this many, the strongest
  var BUCKETS = 32;        // opacity steps of those lines: one path per step and head
  var MAX_CANVAS = 16000;  // device pixels along a canvas side (browsers refuse much more)
  var MODES = ["head", "model", "matrix", "text"];
  var LUT = colourTable();
  var F16 = null;          // half-precision code -> value, built on first use
  var cache = {};          // view index -> {w, lo, hi, rollout}: decoded weights and their shared colour range
  var memo = { key: null, m: null };
  var state = { example: 0, view: 0, layer: 0, head: "all", shown: [], mode: "head", scale: "linear",
    pinned: null, hover: null, sort: { key: "layer", dir: 1 } };
  var dom = { q: [], k: [], thumbs: [] };
  var mx = { left: 0, top: 0, cell: 1 };
  // For the browser tests (and the curious): the state, the lines the head view drew, timings in milliseconds, the
  // matrix's geometry and the decoded weights of a view.
  var api = { state: state, lines: [], timings: {}, matrix: mx,
    decoded: function (i) { return Array.from(weightsOf(i).w); } };
  window.attnlabViewer = api;

  function byId(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }
  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }
  function clamp(x, lo, hi) { return x < lo ? lo : x > hi ? hi : x; }
  // An interface string in the page's language, its {0}, {1}... replaced by the arguments (in one pass).
  function tr(key) {
    var args = Array.prototype.slice.call(arguments, 1);
    return data.ui[key].replace(/\{(\d+)\}/g, function (_, i) { return String(args[Number(i)]); });
  }
  function shown(token) { return token === "" ? "\u2205" : token; }
  function short(token, n) {
    var chars = Array.from(shown(token));
    return chars.length > n ? chars.slice(0, n - 1).join("") + "\u2026" : chars.join("");
  }
  function fmt(w) { return w.toFixed(data.decimals); }
  function view() { return data.views[state.view]; }
  function exampleViews(e) {
    var out = [];
    data.views.forEach(function (v, i) { if (v.example === e) { out.push(i); } });
    return out;
  }

  // ------------------------------------------------------------------------------------------ weights
  function halfTable() {
    var table = new Float32Array(65536);
    for (var c = 0; c < 65536; c++) {
      var sign = c & 0x8000 ? -1 : 1, exp = (c >> 10) & 31, frac = c & 1023;
      table[c] = exp === 0 ? sign * frac * Math.pow(2, -24) : exp === 31 ? (frac ? NaN : sign * Infinity)
        : sign * (1 + frac / 1024) * Math.pow(2, exp - 15);
    }
    return table;
  }
  // The inverse of attnlab.viz.html.encode_weights: (L, H, Tq, Tk) row-major in a Float32Array.
  function decode(enc) {
    var bytes = atob(enc.data), n = enc.shape.reduce(function (a, b) { return a * b; }, 1);
    var out = new Float32Array(n), i;
    if (enc.dtype === "float16") {
      F16 = F16 || halfTable();
      for (i = 0; i < n; i++) { out[i] = F16[bytes.charCodeAt(2 * i) | (bytes.charCodeAt(2 * i + 1) << 8)]; }
      return out;
    }
    var per = enc.shape[2] * enc.shape[3];
    for (var m = 0; m < enc.offset.length; m++) {
      var lo = enc.offset[m], step = enc.step[m], end = (m + 1) * per;
      for (i = m * per; i < end; i++) { out[i] = lo + step * bytes.charCodeAt(i); }
    }
    return out;
  }
  function weightsOf(index) {
    if (!cache[index]) {
      var v = data.views[index], w = decode(v.weights), lo = 0, hi = 0;
      for (var i = 0; i < w.length; i++) { if (w[i] > hi) { hi = w[i]; } if (w[i] < lo) { lo = w[i]; } }
      cache[index] = { w: w, lo: lo, hi: hi > lo ? hi : lo + 1, rollout: v.rollout ? decode(v.rollout) : null };
    }
    return cache[index];
  }
  function headsShown() {
    if (state.head !== "all") { return [state.head]; }
    var out = [];
    state.shown.forEach(function (on, h) { if (on) { out.push(h); } });
    return out;
  }
  // (Tq, Tk) weights of the selected head, or the mean over the heads shown.
  function matrix() {
    var v = view(), heads = headsShown(), n = v.queryTokens.length * v.keyTokens.length;
    var key = state.view + "|" + state.layer + "|" + heads.join(","), w = weightsOf(state.view).w;
    if (memo.key !== key) {
      var base = function (h) { return (state.layer * v.headNames.length + h) * n; }, m;
      if (heads.length === 1) {
        m = w.subarray(base(heads[0]), base(heads[0]) + n);
      } else {
        m = new Float32Array(n);
        heads.forEach(function (h) { for (var k = 0, b = base(h); k < n; k++) { m[k] += w[b + k] / heads.length; } });
      }
      memo = { key: key, m: m };
    }
    return memo.m;
  }

  // ------------------------------------------------------------------------------------------- colour
  function colourTable() {
    var table = new Uint8Array(768), last = VIRIDIS.length - 1;
    for (var k = 0; k < 256; k++) {
      var x = (k / 255) * last, i = Math.min(Math.floor(x), last - 1), f = x - i;
      for (var c = 0; c < 3; c++) {
        table[3 * k + c] = Math.round(VIRIDIS[i][c] + f * (VIRIDIS[i + 1][c] - VIRIDIS[i][c]));
      }
    }
    return table;
  }
  // Where a weight sits on the colour scale, 0 to 1: shared by all layers and heads of this attention.
  function level(w, range) {
    var t = clamp((w - range.lo) / (range.hi - range.lo), 0, 1);
    return state.scale === "sqrt" ? Math.sqrt(t) : t;
  }
  function rgb(t) {
    var k = 3 * Math.round(clamp(t, 0, 1) * 255);
    return "rgb(" + LUT[k] + "," + LUT[k + 1] + "," + LUT[k + 2] + ")";
  }
  // Draw rows x cols values as cells filling (x, y, width, height), one pixel a value scaled without smoothing.
  function paint(ctx, values, rows, cols, range, x, y, width, height) {
    var off = document.createElement("canvas");
    off.width = cols;
    off.height = rows;
    var octx = off.getContext("2d"), img = octx.createImageData(cols, rows), px = img.data;
    for (var k = 0; k < rows * cols; k++) {
      var c = 3 * Math.round(level(values[k], range) * 255);
      px[4 * k] = LUT[c]; px[4 * k + 1] = LUT[c + 1]; px[4 * k + 2] = LUT[c + 2]; px[4 * k + 3] = 255;
    }
    octx.putImageData(img, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(off, x, y, width, height);
  }
  // Max-pool (rows, cols) down to at most (gy, gx), so that a thumbnail keeps its peaks.
  function pool(values, rows, cols, gy, gx) {
    if (gy >= rows && gx >= cols) { return values; }
    var out = new Float32Array(gy * gx).fill(-Infinity);
    for (var i = 0; i < rows; i++) {
      var r = Math.floor((i * gy) / rows) * gx;
      for (var j = 0; j < cols; j++) {
        var k = r + Math.floor((j * gx) / cols), w = values[i * cols + j];
        if (w > out[k]) { out[k] = w; }
      }
    }
    return out;
  }
  // A canvas of (width, height) CSS pixels, at the screen's resolution where the browser allows it.
  function sized(canvas, width, height) {
    var dpr = Math.min(window.devicePixelRatio || 1, MAX_CANVAS / Math.max(width, height, 1));
    var w = Math.max(1, Math.round(width * dpr)), h = Math.max(1, Math.round(height * dpr));
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    canvas.style.width = width + "px";
    canvas.style.height = height + "px";
    var ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    return ctx;
  }
  function colourBar(canvas, range, height) {
    var h = clamp(height, 120, 320), top = 8, bar = h - 16, ctx = sized(canvas, 64, h);
    for (var y = 0; y < bar; y++) {
      ctx.fillStyle = rgb(1 - y / (bar - 1));
      ctx.fillRect(4, top + y, 14, 1);
    }
    ctx.font = "11px " + FONT;
    ctx.fillStyle = "#333";
    ctx.textBaseline = "middle";
    [0, 0.25, 0.5, 0.75, 1].forEach(function (t) {
      var value = range.lo + (range.hi - range.lo) * (state.scale === "sqrt" ? t * t : t);
      var y = top + (1 - t) * (bar - 1);
      ctx.fillRect(18, y, 4, 1);
      ctx.fillText(fmt(value), 24, y);
    });
    canvas.setAttribute("aria-label", tr("barAria", fmt(range.lo), fmt(range.hi)));
  }

  // ----------------------------------------------------------------------------------------- controls
  function fillSelect(select, pairs, value) {
    clear(select);
    pairs.forEach(function (pair) {
      var option = el("option", null, pair[1]);
      option.value = String(pair[0]);
      select.appendChild(option);
    });
    select.value = String(value);
  }
  function buildControls() {
    var v = view();
    fillSelect(byId("view"), exampleViews(state.example).map(function (i) { return [i, data.views[i].title]; }),
      state.view);
    fillSelect(byId("layer"), v.layerNames.map(function (name, i) { return [i, name]; }), state.layer);
    var heads = v.headNames.map(function (name, i) { return [i, name]; });
    if (heads.length > 1) { heads.unshift(["all", tr("allHeads")]); }
    fillSelect(byId("head"), heads, state.head);
    fillSelect(byId("scale"), [["linear", tr("scaleLinear")], ["sqrt", tr("scaleSqrt")]], state.scale);
    MODES.forEach(function (mode) {
      var tab = byId("tab-" + mode), on = mode === state.mode;
      tab.setAttribute("aria-selected", String(on));
      tab.tabIndex = on ? 0 : -1;
      byId("pane-" + mode).hidden = !on;
    });
  }
  function exampleName(e) { return data.examples[e].name || tr("exampleN", e + 1); }
  function buildExamples() {
    var many = data.examples.length > 1, ex = data.examples[state.example], parts = [];
    if (many) { parts.push(tr("exampleOf", state.example + 1, data.examples.length)); }
    if (ex.name) { parts.push(ex.name); }
    if (ex.prediction !== null && ex.prediction !== undefined) { parts.push(tr("prediction", ex.prediction)); }
    byId("title").textContent = data.title;
    byId("example-line").textContent = parts.join(" \u00b7 ");
    byId("examples-box").hidden = !many;
    byId("layout").classList.toggle("single", !many);
    if (!many) { return; }
    var list = byId("examples");
    if (list.children.length !== data.examples.length) {
      clear(list);
      data.examples.forEach(function (item, e) {
        var button = el("button"), li = el("li");
        button.type = "button";
        button.dataset.example = String(e);
        button.appendChild(el("span", "ex-name", exampleName(e)));
        if (item.prediction !== null && item.prediction !== undefined) {
          button.appendChild(el("span", "ex-pred", "\u2192 " + item.prediction));
        }
        li.appendChild(button);
        list.appendChild(li);
      });
    }
    Array.prototype.forEach.call(list.querySelectorAll("button"), function (b) {
      var on = Number(b.dataset.example) === state.example;
      if (on) { b.setAttribute("aria-current", "true"); } else { b.removeAttribute("aria-current"); }
    });
  }

  // -------------------------------------------------------------------------------------- head view
  function column(box, tokens, side) {
    clear(box);
    return tokens.map(function (token, i) {
      var b = el("button", "hv-tok", shown(token));
      b.type = "button";
      b.dataset.side = side;
      b.dataset.index = String(i);
      b.title = tr(side === "q" ? "queryN" : "keyN", i);
      box.appendChild(b);
      return b;
    });
  }
  function buildToggles() {
    var box = byId("head-toggles"), v = view(), heads = headsShown();
    clear(box);
    v.headNames.forEach(function (name, h) {
      var label = el("label", "toggle"), input = el("input"), swatch = el("span", "swatch");
      input.type = "checkbox";
      input.dataset.head = String(h);
      input.checked = heads.indexOf(h) >= 0;
      swatch.style.backgroundColor = HEAD_COLOURS[h % HEAD_COLOURS.length];
      label.appendChild(input);
      label.appendChild(swatch);
      label.appendChild(document.createTextNode(name));
      box.appendChild(label);
    });
  }
  function buildHead() {
    var v = view(), rows = Math.max(v.queryTokens.length, v.keyTokens.length), box = byId("headview");
    var row = rows > 60 ? 16 : rows > 30 ? 22 : 26;
    box.style.setProperty("--row", row + "px");
    byId("hv-q-label").textContent = tr(v.kind === "cross" ? "queriesTarget" : "queries");
    byId("hv-k-label").textContent = tr(v.kind === "cross" ? "keysSource" : "keys");
    dom.q = column(byId("hv-q"), v.queryTokens, "q");
    dom.k = column(byId("hv-k"), v.keyTokens, "k");
    dom.row = row;
    dom.linesKey = dom.capKey = null;
    buildToggles();
  }
  // Lines from each query (left) to each key (right), opacity = the weight's level on the shared colour scale:
  // those of the selected token, or with none selected the strongest (at most about MAX_LINES) of the heads shown.
  function computeLines(sel) {
    var t0 = performance.now(), v = view(), range = weightsOf(state.view), w = range.w, heads = headsShown();
    var Tq = v.queryTokens.length, Tk = v.keyTokens.length, H = v.headNames.length, n = Tq * Tk, lines = [];
    var shared = [state.view, state.layer, heads.join(","), state.scale].join("|");
    var key = shared + "|" + (sel ? sel.side + sel.index : "");
    if (dom.linesKey === key) { return; }
    if (dom.capKey !== shared) {  // count lines per opacity step; keep the strongest steps up to MAX_LINES
      var hist = new Uint32Array(BUCKETS), cut = 0, total = 0;
      heads.forEach(function (h) {
        for (var k = 0, base = (state.layer * H + h) * n; k < n; k++) {
          var a = level(w[base + k], range);
          if (a >= MIN_ALPHA) { hist[Math.min(BUCKETS - 1, Math.floor(a * BUCKETS))]++; }
        }
      });
      for (var b = BUCKETS - 1; b >= 0; b--) {
        if (total > 0 && total + hist[b] > MAX_LINES) { cut = b + 1; break; }
        total += hist[b];
      }
      dom.capKey = shared;
      dom.cut = cut;
      // The same note with or without a selection: the columns must not move under the pointer.
      byId("head-note").textContent = !heads.length ? tr("noHeads") : cut > 0 ? tr("linesCapped", total) : "";
    }
    heads.forEach(function (h) {
      var base = (state.layer * H + h) * n;
      if (sel) {
        for (var t = 0, count = sel.side === "q" ? Tk : Tq; t < count; t++) {
          var i = sel.side === "q" ? sel.index : t, j = sel.side === "q" ? t : sel.index;
          var a = level(w[base + i * Tk + j], range);
          if (a >= MIN_ALPHA) { lines.push([h, i, j, a]); }
        }
        return;
      }
      for (var k = 0; k < n; k++) {
        var c = level(w[base + k], range);
        if (c >= MIN_ALPHA && Math.min(BUCKETS - 1, Math.floor(c * BUCKETS)) >= dom.cut) {
          lines.push([h, Math.floor(k / Tk), k % Tk, c]);
        }
      }
    });
    dom.lines = lines;
    dom.linesKey = key;
    dom.bold = !!sel;
    api.lines = lines;
    api.timings.lines = performance.now() - t0;
  }
  // The canvas covers only the visible band of the columns (it is sticky in the scrolled box): browsers raster
  // every line drawn, so lines outside the band are skipped and the rest are drawn as one path per head and step.
  function paintLines() {
    var v = view(), box = byId("headview"), canvas = byId("hv-canvas"), row = dom.row;
    // As wide as the pane allows, up to 380 px: steeper lines are easier to follow (room for a scroll bar kept).
    var columns = byId("hv-q").offsetWidth + byId("hv-k").offsetWidth;
    var width = clamp(byId("pane-head").clientWidth - columns - 24, 80, 380);
    var full = Math.max(v.queryTokens.length, v.keyTokens.length) * row;
    var height = Math.min(full, box.clientHeight || full);
    var top = Math.min(box.scrollTop, full - height), ctx = sized(canvas, width, height), paths = {};
    dom.lines.forEach(function (line) {
      var y1 = (line[1] + 0.5) * row - top, y2 = (line[2] + 0.5) * row - top;
      if ((y1 < 0 && y2 < 0) || (y1 > height && y2 > height)) { return; }
      var key = line[0] * BUCKETS + Math.min(BUCKETS - 1, Math.floor(line[3] * BUCKETS));
      var path = paths[key] || (paths[key] = new Path2D());
      path.moveTo(0, y1);
      path.lineTo(width, y2);
    });
    ctx.lineWidth = dom.bold ? 2 : 1.25;
    Object.keys(paths).forEach(function (key) {
      var h = Math.floor(key / BUCKETS), step = key % BUCKETS;
      ctx.strokeStyle = HEAD_COLOURS[h % HEAD_COLOURS.length];
      ctx.globalAlpha = Math.max(MIN_ALPHA, (step + 0.5) / BUCKETS);
      ctx.stroke(paths[key]);
    });
    ctx.globalAlpha = 1;
  }
  function drawLines(sel) {
    computeLines(sel);
    paintLines();
  }

  // ------------------------------------------------------------------------------------- model view
  function buildModel() {
    var v = view(), L = v.layerNames.length, H = v.headNames.length, grid = byId("model-grid");
    var range = weightsOf(state.view), Tq = v.queryTokens.length, Tk = v.keyTokens.length, n = Tq * Tk;
    var avail = Math.max(240, byId("pane-model").clientWidth - 160);
    var size = clamp(Math.floor(avail / H) - 8, 36, 120), gy = Math.min(Tq, size), gx = Math.min(Tk, size);
    clear(grid);
    grid.style.gridTemplateColumns = "auto repeat(" + H + ", " + (size + 6) + "px)";
    grid.appendChild(el("span"));
    v.headNames.forEach(function (name, h) {
      var label = el("span", "mv-head", name);
      label.style.borderBottomColor = HEAD_COLOURS[h % HEAD_COLOURS.length];
      grid.appendChild(label);
    });
    dom.thumbs = [];
    for (var l = 0; l < L; l++) {
      grid.appendChild(el("span", "mv-layer", v.layerNames[l]));
      for (var h = 0; h < H; h++) {
        var button = el("button", "thumb"), canvas = el("canvas"), base = (l * H + h) * n;
        button.type = "button";
        button.dataset.layer = String(l);
        button.dataset.head = String(h);
        button.setAttribute("aria-label", tr("thumbAria", v.layerNames[l], v.headNames[h], v.entropy[l][h].toFixed(2)));
        var on = l === state.layer && state.head === h;
        button.setAttribute("aria-pressed", String(on));
        button.classList.toggle("selected", on);
        button.appendChild(canvas);
        grid.appendChild(button);
        paint(sized(canvas, size, size), pool(range.w.subarray(base, base + n), Tq, Tk, gy, gx), gy, gx, range,
          0, 0, size, size);
        dom.thumbs.push(button);
      }
    }
    colourBar(byId("model-bar"), range, L * (size + 8));
  }

  // ----------------------------------------------------------------------------------------- matrix
  function buildMatrix() {
    var v = view(), Tq = v.queryTokens.length, Tk = v.keyTokens.length, range = weightsOf(state.view);
    var base = byId("mx-base"), m = matrix(), probe = base.getContext("2d");
    probe.font = "11px " + FONT;
    var widest = function (tokens) {
      return tokens.reduce(function (a, t) { return Math.max(a, probe.measureText(short(t, 18)).width); }, 0);
    };
    mx.left = Math.ceil(Math.min(160, widest(v.queryTokens)) + 10);
    mx.top = Math.ceil(Math.min(120, widest(v.keyTokens)) + 10);
    var avail = Math.max(200, byId("pane-matrix").clientWidth - 90 - mx.left);
    mx.cell = clamp(Math.floor(avail / Tk), 4, 44);
    var c = mx.cell, width = mx.left + Tk * c + 2, height = mx.top + Tq * c + 2;
    var ctx = sized(base, width, height);
    sized(byId("mx-over"), width, height);
    paint(ctx, m, Tq, Tk, range, mx.left, mx.top, Tk * c, Tq * c);
    if (c >= 8) {  // cell borders
      ctx.strokeStyle = "rgba(255, 255, 255, 0.5)";
      ctx.lineWidth = 1;
      ctx.beginPath();
      for (var i = 0; i <= Tq; i++) {
        ctx.moveTo(mx.left, mx.top + i * c + 0.5);
        ctx.lineTo(mx.left + Tk * c, mx.top + i * c + 0.5);
      }
      for (var j = 0; j <= Tk; j++) {
        ctx.moveTo(mx.left + j * c + 0.5, mx.top);
        ctx.lineTo(mx.left + j * c + 0.5, mx.top + Tq * c);
      }
      ctx.stroke();
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    if (c >= 28) {  // the value in each cell, dark on light colours and light on dark ones
      ctx.font = "10px " + FONT;
      for (i = 0; i < Tq; i++) {
        for (j = 0; j < Tk; j++) {
          var w = m[i * Tk + j];
          ctx.fillStyle = level(w, range) > 0.55 ? "#111" : "#f4f4f4";
          ctx.fillText(w.toFixed(Math.min(2, data.decimals)), mx.left + (j + 0.5) * c, mx.top + (i + 0.5) * c);
        }
      }
    }
    if (v.alignment) {  // argmax alignment over all layers and heads: [source i, target j]
      ctx.strokeStyle = "#D55E00";
      ctx.lineWidth = 2;
      v.alignment.forEach(function (p) {
        ctx.strokeRect(mx.left + p[0] * c + 1.5, mx.top + p[1] * c + 1.5, c - 3, c - 3);
      });
    }
    labels(ctx, v, -1, -1, false);
    var headText = headsShown().length === 1 ? v.headNames[headsShown()[0]] : tr("meanHeads");
    byId("matrix-title").textContent = tr("matrixTitle", v.layerNames[state.layer], headText);
    colourBar(byId("matrix-bar"), range, Tq * c + mx.top);
  }
  // Row and column labels, every step-th one when cells are too small for all; row qi and column kj always
  // (and, with only, nothing else).
  function labels(ctx, v, qi, kj, only) {
    var c = mx.cell, step = Math.max(1, Math.ceil(13 / c));
    ctx.font = "11px " + FONT;
    ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    v.queryTokens.forEach(function (t, i) {
      if (i !== qi && (only || i % step)) { return; }
      ctx.fillStyle = i === qi ? "#C0392B" : "#333";
      ctx.fillText(short(t, 18), mx.left - 4, mx.top + (i + 0.5) * c);
    });
    ctx.textAlign = "left";
    v.keyTokens.forEach(function (t, j) {
      if (j !== kj && (only || j % step)) { return; }
      ctx.save();
      ctx.translate(mx.left + (j + 0.5) * c, mx.top - 4);
      ctx.rotate(-Math.PI / 2);
      ctx.fillStyle = j === kj ? "#C0392B" : "#333";
      ctx.fillText(short(t, 18), 0, 0);
      ctx.restore();
    });
  }
  function matrixOverlay(sel) {
    var over = byId("mx-over"), v = view(), c = mx.cell, ctx = over.getContext("2d");
    var dpr = over.width / parseFloat(over.style.width);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, over.width, over.height);
    if (!sel) { return; }
    var qi = sel.side === "q" ? sel.index : -1;
    var kj = sel.side === "k" ? sel.index : sel.key === undefined ? -1 : sel.key;
    // White under black: the outline shows on every colour of the scale.
    [["#fff", 3.5], ["#111", 1.5]].forEach(function (pen) {
      ctx.strokeStyle = pen[0];
      ctx.lineWidth = pen[1];
      if (qi >= 0) { ctx.strokeRect(mx.left, mx.top + qi * c, v.keyTokens.length * c, c); }
      if (kj >= 0 && qi < 0) { ctx.strokeRect(mx.left + kj * c, mx.top, c, v.queryTokens.length * c); }
      if (kj >= 0 && qi >= 0) { ctx.strokeRect(mx.left + kj * c - 1, mx.top + qi * c - 1, c + 2, c + 2); }
    });
    ctx.fillStyle = "#fafafa";  // the highlighted labels, written over the plain ones
    if (qi >= 0) { ctx.fillRect(0, mx.top + qi * c + c / 2 - 7, mx.left - 2, 14); }
    if (kj >= 0) { ctx.fillRect(mx.left + kj * c + c / 2 - 7, 0, 14, mx.top - 2); }
    labels(ctx, v, qi, kj, true);
  }
  function matrixTarget(event) {
    var rect = byId("mx-base").getBoundingClientRect(), v = view(), c = mx.cell;
    var x = event.clientX - rect.left, y = event.clientY - rect.top;
    var i = Math.floor((y - mx.top) / c), j = Math.floor((x - mx.left) / c);
    var inRows = i >= 0 && i < v.queryTokens.length, inCols = j >= 0 && j < v.keyTokens.length;
    if (inRows && inCols) { return { side: "q", index: i, key: j }; }
    if (inRows && x < mx.left) { return { side: "q", index: i }; }
    if (inCols && y < mx.top) { return { side: "k", index: j }; }
    return null;
  }

  // -------------------------------------------------------------------------------------- text view
  function tokenRow(box, tokens, side) {
    clear(box);
    return tokens.map(function (token, i) {
      var chip = el("button", "tok", shown(token));
      chip.type = "button";
      chip.dataset.side = side;
      chip.dataset.index = String(i);
      chip.title = tr(side === "q" ? "queryN" : "keyN", i);
      box.appendChild(chip);
      return chip;
    });
  }
  function buildText() {
    var v = view();
    byId("q-label").textContent = tr(v.kind === "cross" ? "queriesTarget" : "queries");
    byId("k-label").textContent = tr(v.kind === "cross" ? "keysSource" : "keys");
    dom.q = tokenRow(byId("queries"), v.queryTokens, "q");
    dom.k = tokenRow(byId("keys"), v.keyTokens, "k");
  }
  // Tokens of the head and text views: the selected one marked, the others shaded by their weight to or from it.
  function shadeTokens(sel) {
    dom.q.concat(dom.k).forEach(function (chip) {
      chip.classList.remove("selected", "top");
      delete chip.dataset.weight;
      chip.style.backgroundColor = "";
      chip.style.color = "";
    });
    if (!sel || (sel.side === "q" ? dom.q : dom.k).length <= sel.index) { return null; }
    var m = matrix(), Tk = view().keyTokens.length, fromQuery = sel.side === "q";
    var own = fromQuery ? dom.q : dom.k, other = fromQuery ? dom.k : dom.q, max = 0, best = 0;
    var weights = other.map(function (_, t) { return fromQuery ? m[sel.index * Tk + t] : m[t * Tk + sel.index]; });
    weights.forEach(function (w, t) { if (w > max) { max = w; best = t; } });
    own[sel.index].classList.add("selected");
    other.forEach(function (chip, t) {
      var share = max > 0 ? Math.max(0, weights[t]) / max : 0;
      chip.dataset.weight = weights[t].toFixed(4);
      chip.style.backgroundColor = "rgba(0, 114, 178, " + (0.85 * share).toFixed(3) + ")";
      chip.style.color = share > 0.6 ? "#fff" : "";
    });
    if (max > 0) { other[best].classList.add("top"); }
    return { best: best, max: max };
  }

  // -------------------------------------------------------------------------------------- summaries
  function buildSummary() {
    var v = view(), body = byId("entropy-body"), rows = [], heads = headsShown();
    v.layerNames.forEach(function (_, l) {
      v.headNames.forEach(function (_, h) {
        rows.push({ layer: l, head: h, entropy: v.entropy[l][h], focus: v.focus[l][h] });
      });
    });
    var key = state.sort.key, dir = state.sort.dir;
    rows.sort(function (a, b) {
      return (a[key] - b[key]) * dir || a.layer - b.layer || a.head - b.head;
    });
    var top = rows.reduce(function (a, r) { return Math.max(a, r.entropy); }, 0) || 1;
    clear(body);
    rows.forEach(function (r) {
      var tr_ = el("tr"), first = el("td"), button = el("button", "linkish", v.layerNames[r.layer]);
      button.type = "button";
      button.dataset.layer = String(r.layer);
      button.dataset.head = String(r.head);
      button.setAttribute("aria-label",
        tr("thumbAria", v.layerNames[r.layer], v.headNames[r.head], r.entropy.toFixed(2)));
      first.appendChild(button);
      tr_.appendChild(first);
      var head = el("td", null, v.headNames[r.head]);
      head.style.borderLeft = "4px solid " + HEAD_COLOURS[r.head % HEAD_COLOURS.length];
      tr_.appendChild(head);
      var ent = el("td", "num"), barBox = el("span", "ebar"), fill = el("span");
      fill.style.width = Math.round((100 * r.entropy) / top) + "%";
      barBox.appendChild(fill);
      ent.appendChild(document.createTextNode(r.entropy.toFixed(2)));
      ent.appendChild(barBox);
      tr_.appendChild(ent);
      tr_.appendChild(el("td", "num", r.focus.toFixed(2)));
      if (r.layer === state.layer && heads.indexOf(r.head) >= 0) { tr_.className = "current"; }
      body.appendChild(tr_);
    });
    Array.prototype.forEach.call(document.querySelectorAll("#entropy th"), function (th) {
      th.setAttribute("aria-sort", th.dataset.sort === key ? (dir > 0 ? "ascending" : "descending") : "none");
    });
    byId("rollout-box").hidden = !v.rollout;
    byId("align-box").hidden = !v.alignment;
    if (v.rollout) {
      var T = v.queryTokens.length, size = 160, g = Math.min(T, size), r = weightsOf(state.view).rollout;
      var hi = r.reduce(function (a, x) { return Math.max(a, x); }, 0) || 1;
      paint(sized(byId("rollout-canvas"), size, size), pool(r, T, T, g, g), g, g, { lo: 0, hi: hi }, 0, 0, size, size);
    }
    if (v.alignment) {
      var list = byId("align-list");
      clear(list);
      v.alignment.forEach(function (p) {
        var li = el("li"), b = el("button", "linkish");
        b.type = "button";
        b.dataset.side = "q";
        b.dataset.index = String(p[1]);
        b.appendChild(el("span", "tokname", shown(v.queryTokens[p[1]])));
        b.appendChild(document.createTextNode(" \u2190 "));
        b.appendChild(el("span", "tokname", shown(v.keyTokens[p[0]])));
        li.appendChild(b);
        list.appendChild(li);
      });
    }
  }
  // Rollout row of the selected query (the first token when none): where its final representation comes from.
  function rolloutFor(sel) {
    var v = view();
    if (!v.rollout) { return; }
    var T = v.queryTokens.length, i = sel && sel.side === "q" ? sel.index : 0, r = weightsOf(state.view).rollout;
    var order = [];
    for (var j = 0; j < T; j++) { order.push(j); }
    order.sort(function (a, b) { return r[i * T + b] - r[i * T + a]; });
    byId("rollout-for").textContent = tr("rolloutFor", shown(v.queryTokens[i]));
    var list = byId("rollout-top");
    clear(list);
    order.slice(0, 5).forEach(function (j) {
      var li = el("li");
      li.appendChild(el("span", "tokname", shown(v.keyTokens[j])));
      li.appendChild(document.createTextNode(" " + fmt(r[i * T + j])));
      list.appendChild(li);
    });
  }

  // ---------------------------------------------------------------------------------------- updates
  function selection() { return state.hover || state.pinned; }
  function render() {
    var t0 = performance.now();
    buildExamples();
    buildControls();
    if (state.mode === "head") { buildHead(); }
    if (state.mode === "model") { buildModel(); }
    if (state.mode === "matrix") { buildMatrix(); }
    if (state.mode === "text") { buildText(); }
    buildSummary();
    highlight();
    api.timings.render = performance.now() - t0;
  }
  function highlight() {
    var t0 = performance.now(), sel = selection(), v = view(), found = null;
    if (state.mode === "head" || state.mode === "text") { found = shadeTokens(sel); }
    if (state.mode === "head") { drawLines(found ? sel : null); }
    if (state.mode === "matrix") { matrixOverlay(sel); }
    rolloutFor(sel);
    var status = byId("status");
    if (!sel || (state.mode !== "matrix" && !found)) {
      status.textContent = tr("idle", v.title);
    } else if (state.mode === "matrix" && sel.key !== undefined) {
      status.textContent = tr("cell", shown(v.queryTokens[sel.index]), shown(v.keyTokens[sel.key]),
        fmt(matrix()[sel.index * v.keyTokens.length + sel.key])) + (state.pinned ? tr("pinned") : "");
    } else {
      var m = matrix(), Tk = v.keyTokens.length, fromQuery = sel.side === "q";
      var count = fromQuery ? Tk : v.queryTokens.length;
      var best = 0, max = -Infinity;
      for (var t = 0; t < count; t++) {
        var w = fromQuery ? m[sel.index * Tk + t] : m[t * Tk + sel.index];
        if (w > max) { max = w; best = t; }
      }
      var tokens = fromQuery ? v.queryTokens : v.keyTokens, others = fromQuery ? v.keyTokens : v.queryTokens;
      status.textContent = tr(fromQuery ? "queryMost" : "keyMost", shown(tokens[sel.index]), shown(others[best]),
        fmt(max)) + (state.pinned ? tr("pinned") : "");
    }
    api.timings.highlight = performance.now() - t0;
  }
  function fixState() {
    var v = view(), H = v.headNames.length;
    state.layer = clamp(state.layer, 0, v.layerNames.length - 1);
    if (state.shown.length !== H) { state.shown = v.headNames.map(function () { return true; }); }
    if (state.head === "all" && H === 1) { state.head = 0; }
    if (state.head !== "all" && state.head >= H) { state.head = H > 1 ? "all" : 0; }
  }
  function setExample(e) {
    var kind = view().kind, ids = exampleViews(e);
    state.example = e;
    state.view = ids.filter(function (i) { return data.views[i].kind === kind; })[0];
    if (state.view === undefined) { state.view = ids[0]; }
    state.pinned = state.hover = null;
    fixState();
    render();
  }
  function setMode(mode) { state.mode = mode; state.hover = null; render(); }
  function setLayer(layer) { state.layer = clamp(layer, 0, view().layerNames.length - 1); render(); }
  function stepHead(d) {
    var order = view().headNames.map(function (_, h) { return h; });
    if (order.length > 1) { order.unshift("all"); }
    var at = order.indexOf(state.head);
    state.head = order[(at + d + order.length) % order.length];
    render();
  }
  function target(event) {
    var node = event.target;
    while (node && node !== document.body) {
      if (node.dataset && node.dataset.side) { return { side: node.dataset.side, index: Number(node.dataset.index) }; }
      node = node.parentNode;
    }
    return null;
  }
  function same(a, b) { return !!a && !!b && a.side === b.side && a.index === b.index && a.key === b.key; }
  function focusToken(sel) {
    var node = (sel.side === "q" ? dom.q : dom.k)[sel.index];
    if (node) { node.focus({ preventScroll: true }); node.scrollIntoView({ block: "nearest", inline: "nearest" }); }
  }
  // Arrow keys: move the pinned token (head and text views), cell (matrix) or thumbnail (model view).
  function arrow(key) {
    var v = view(), Tq = v.queryTokens.length, Tk = v.keyTokens.length, sel = selection();
    var up = key === "ArrowUp", down = key === "ArrowDown", left = key === "ArrowLeft", right = key === "ArrowRight";
    if (state.mode === "model") {
      var head = state.head === "all" ? 0 : state.head;
      state.layer = clamp(state.layer + (down ? 1 : up ? -1 : 0), 0, v.layerNames.length - 1);
      state.head = clamp(head + (right ? 1 : left ? -1 : 0), 0, v.headNames.length - 1);
      render();
      var thumb = dom.thumbs[state.layer * v.headNames.length + state.head];
      if (thumb) { thumb.focus(); }
      return;
    }
    if (state.mode === "matrix") {
      var i = sel ? (sel.side === "q" ? sel.index : 0) : 0, j = sel ? (sel.side === "k" ? sel.index : sel.key || 0) : 0;
      if (sel) { i += down ? 1 : up ? -1 : 0; j += right ? 1 : left ? -1 : 0; }
      state.pinned = { side: "q", index: clamp(i, 0, Tq - 1), key: clamp(j, 0, Tk - 1) };
      state.hover = null;
      highlight();
      var box = byId("matrix"), x = mx.left + state.pinned.key * mx.cell, y = mx.top + state.pinned.index * mx.cell;
      if (x < box.scrollLeft || x + mx.cell > box.scrollLeft + box.clientWidth) {
        box.scrollLeft = x - box.clientWidth / 2;
      }
      if (y < box.scrollTop || y + mx.cell > box.scrollTop + box.clientHeight) {
        box.scrollTop = y - box.clientHeight / 2;
      }
      return;
    }
    var along = state.mode === "head" ? [up, down] : [left, right];
    var across = state.mode === "head" ? [left, right] : [up, down];
    var side = sel ? sel.side : "q", index = sel ? sel.index : -1;
    if (across[0]) { side = "q"; } else if (across[1]) { side = "k"; }
    index += along[1] ? 1 : along[0] ? -1 : 0;
    index = clamp(index, 0, (side === "q" ? Tq : Tk) - 1);
    state.pinned = { side: side, index: index };
    state.hover = null;
    highlight();
    focusToken(state.pinned);
  }

  // ----------------------------------------------------------------------------------------- events
  ["headview", "pane-text"].forEach(function (id) {
    var box = byId(id);
    box.addEventListener("mouseover", function (event) {
      var sel = target(event);
      if (sel && !same(sel, state.hover)) { state.hover = sel; highlight(); }
    });
    box.addEventListener("mouseleave", function () { if (state.hover) { state.hover = null; highlight(); } });
    box.addEventListener("focusin", function (event) {
      var sel = target(event);
      if (sel && !same(sel, state.hover)) { state.hover = sel; highlight(); }
    });
    box.addEventListener("click", function (event) {
      var sel = target(event);
      if (!sel) { return; }
      state.pinned = same(sel, state.pinned) ? null : sel;
      highlight();
    });
  });
  var scrolled = false;
  byId("headview").addEventListener("scroll", function () {
    if (scrolled) { return; }
    scrolled = true;
    window.requestAnimationFrame(function () { scrolled = false; if (state.mode === "head") { paintLines(); } });
  });
  var matrixBox = byId("matrix");
  matrixBox.addEventListener("mousemove", function (event) {
    var sel = matrixTarget(event);
    if (!same(sel, state.hover)) { state.hover = sel; highlight(); }
  });
  matrixBox.addEventListener("mouseleave", function () { if (state.hover) { state.hover = null; highlight(); } });
  matrixBox.addEventListener("click", function (event) {
    var sel = matrixTarget(event);
    state.pinned = !sel || same(sel, state.pinned) ? null : sel;
    highlight();
  });
  byId("model-grid").addEventListener("click", function (event) {
    var node = event.target.closest ? event.target.closest("button.thumb") : null;
    if (!node) { return; }
    state.layer = Number(node.dataset.layer);
    state.head = Number(node.dataset.head);
    state.pinned = state.hover = null;
    setMode("head");
  });
  byId("head-toggles").addEventListener("change", function (event) {
    var h = Number(event.target.dataset.head), heads = headsShown();
    state.shown = view().headNames.map(function (_, g) { return heads.indexOf(g) >= 0; });
    state.shown[h] = event.target.checked;
    state.head = "all";
    render();
  });
  byId("entropy").addEventListener("click", function (event) {
    var th = event.target.closest ? event.target.closest("th") : null, b = event.target.closest("button");
    if (th) {
      state.sort = { key: th.dataset.sort, dir: state.sort.key === th.dataset.sort ? -state.sort.dir : 1 };
      buildSummary();
    } else if (b && b.dataset.layer !== undefined) {
      state.layer = Number(b.dataset.layer);
      state.head = Number(b.dataset.head);
      render();
    }
  });
  byId("align-list").addEventListener("click", function (event) {
    var sel = target(event);
    if (sel) { state.pinned = sel; highlight(); if (state.mode !== "matrix") { focusToken(sel); } }
  });
  byId("examples").addEventListener("click", function (event) {
    var b = event.target.closest ? event.target.closest("button") : null;
    if (b) { setExample(Number(b.dataset.example)); }
  });
  document.querySelector(".tabs").addEventListener("click", function (event) {
    var b = event.target.closest ? event.target.closest("[data-mode]") : null;
    if (b) { setMode(b.dataset.mode); }
  });
  byId("view").addEventListener("change", function (event) {
    state.view = Number(event.target.value);
    state.pinned = state.hover = null;
    fixState();
    render();
  });
  byId("layer").addEventListener("change", function (event) { setLayer(Number(event.target.value)); });
  byId("head").addEventListener("change", function (event) {
    state.head = event.target.value === "all" ? "all" : Number(event.target.value);
    render();
  });
  byId("scale").addEventListener("change", function (event) { state.scale = event.target.value; render(); });
  document.addEventListener("keydown", function (event) {
    var node = event.target, tag = node && node.tagName, key = event.key;
    var sideways = key === "ArrowLeft" || key === "ArrowRight", vertical = key === "ArrowUp" || key === "ArrowDown";
    if (event.ctrlKey || event.metaKey || event.altKey || tag === "SELECT" || tag === "INPUT" || tag === "TEXTAREA") {
      return;
    }
    if (node && node.getAttribute && node.getAttribute("role") === "tab" && sideways) {
      setMode(MODES[(MODES.indexOf(state.mode) + (key === "ArrowRight" ? 1 : MODES.length - 1)) % MODES.length]);
      byId("tab-" + state.mode).focus();
    } else if (node && node.dataset && node.dataset.example !== undefined && vertical) {
      setExample(clamp(state.example + (key === "ArrowDown" ? 1 : -1), 0, data.examples.length - 1));
      byId("examples").querySelectorAll("button")[state.example].focus();
    } else if (key === "Escape") {
      state.pinned = state.hover = null;
      highlight();
    } else if (key === "[" || key === "]") {
      setLayer(state.layer + (key === "]" ? 1 : -1));
    } else if (key === "," || key === ".") {
      stepHead(key === "." ? 1 : -1);
    } else if (key.indexOf("Arrow") === 0) {
      arrow(key);
    } else {
      return;
    }
    event.preventDefault();
  });
  // A new width only re-lays out the canvases: the token buttons stay the same elements, so that a click that
  // began before the resize (a notebook's frame gains a scroll bar, say) still ends on its button.
  var pending = false, lastWidth = window.innerWidth;
  window.addEventListener("resize", function () {
    if (pending || window.innerWidth === lastWidth) { return; }
    pending = true;
    window.requestAnimationFrame(function () {
      pending = false;
      lastWidth = window.innerWidth;
      if (state.mode === "head") { paintLines(); }
      if (state.mode === "model") { buildModel(); }
      if (state.mode === "matrix") { buildMatrix(); matrixOverlay(selection()); }
    });
  });

  fixState();
  state.head = view().headNames.length > 1 ? "all" : 0;
  render();
  api.timings.ready = performance.now();
  document.documentElement.dataset.ready = "1";
}());
